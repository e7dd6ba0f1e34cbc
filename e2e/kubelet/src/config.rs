//! Command-line configuration: the fake nodes and the image → executable table.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};

/// The TEE type a fake node advertises through the `power.a3s.dev/tee` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeeType {
    SevSnp,
    Tdx,
    None,
}

impl TeeType {
    pub fn label(self) -> &'static str {
        match self {
            TeeType::SevSnp => "sev-snp",
            TeeType::Tdx => "tdx",
            TeeType::None => "none",
        }
    }

    /// The RuntimeClass (and handler) that schedules pods onto nodes of this TEE type.
    pub fn runtime_class(self) -> Option<&'static str> {
        match self {
            TeeType::SevSnp => Some("kata-qemu-snp"),
            TeeType::Tdx => Some("kata-qemu-tdx"),
            TeeType::None => None,
        }
    }

    pub const ALL: [TeeType; 3] = [TeeType::SevSnp, TeeType::Tdx, TeeType::None];
}

impl FromStr for TeeType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        TeeType::ALL
            .into_iter()
            .find(|t| t.label() == s)
            .with_context(|| format!("unknown TEE type {s:?}: expected sev-snp, tdx or none"))
    }
}

/// One fake node: `NAME=TEE`, e.g. `snp-0=sev-snp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeArg {
    pub name: String,
    pub tee: TeeType,
}

impl FromStr for NodeArg {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (name, tee) = s
            .split_once('=')
            .with_context(|| format!("node {s:?}: expected NAME=TEE"))?;
        if name.is_empty() {
            bail!("node {s:?}: empty name");
        }
        Ok(NodeArg {
            name: name.to_owned(),
            tee: tee.parse()?,
        })
    }
}

/// One image table entry: `IMAGE=PATH`. IMAGE is a full reference (`repo:tag`) or a repository,
/// which then matches every tag and digest of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageArg {
    pub image: String,
    pub path: PathBuf,
}

impl FromStr for ImageArg {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (image, path) = s
            .split_once('=')
            .with_context(|| format!("image {s:?}: expected IMAGE=PATH"))?;
        if image.is_empty() || path.is_empty() {
            bail!("image {s:?}: expected IMAGE=PATH");
        }
        Ok(ImageArg {
            image: image.to_owned(),
            path: PathBuf::from(path),
        })
    }
}

/// Maps container images to the local executable that plays their entrypoint.
#[derive(Clone, Debug, Default)]
pub struct ImageTable {
    entries: Vec<ImageArg>,
}

impl ImageTable {
    pub fn new(entries: Vec<ImageArg>) -> Self {
        ImageTable { entries }
    }

    /// The executable for `image`: an exact entry wins over a repository entry.
    pub fn resolve(&self, image: &str) -> Option<&Path> {
        let exact = self.entries.iter().find(|e| e.image == image);
        let repo = repository(image);
        exact
            .or_else(|| self.entries.iter().find(|e| e.image == repo))
            .map(|e| e.path.as_path())
    }
}

/// `registry:5000/a/b:tag@sha256:..` → `registry:5000/a/b`.
pub fn repository(image: &str) -> &str {
    let no_digest = image.split_once('@').map_or(image, |(r, _)| r);
    match no_digest.rfind(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// Settings shared by every pod worker.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    pub run_dir: PathBuf,
    pub images: ImageTable,
    /// The gateway of every pod: an address of the test network namespace.
    pub gateway: Ipv4Addr,
    /// First restart delay; doubled per restart up to `backoff_max` (the kubelet uses 10 s / 5 min).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Where the `kubernetes` Service's ClusterIP and port point (KUBERNETES_SERVICE_HOST/PORT).
    pub kubernetes_service: Option<(String, i32)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_strips_tag_and_digest_but_not_port() {
        assert_eq!(repository("ghcr.io/a3s/power:1.0"), "ghcr.io/a3s/power");
        assert_eq!(repository("localhost:5000/power"), "localhost:5000/power");
        assert_eq!(
            repository("localhost:5000/power:v1"),
            "localhost:5000/power"
        );
        assert_eq!(repository("power@sha256:abcd"), "power");
        assert_eq!(repository("power:v1@sha256:abcd"), "power");
    }

    #[test]
    fn image_table_prefers_exact_entries() {
        let t = ImageTable::new(vec![
            "power=/bin/any".parse().unwrap(),
            "power:v2=/bin/v2".parse().unwrap(),
        ]);
        assert_eq!(t.resolve("power:v2"), Some(Path::new("/bin/v2")));
        assert_eq!(t.resolve("power:v1"), Some(Path::new("/bin/any")));
        assert_eq!(t.resolve("other:v1"), None);
    }

    #[test]
    fn node_args_parse_and_reject_unknown_tee() {
        let n: NodeArg = "snp-0=sev-snp".parse().unwrap();
        assert_eq!(n.tee, TeeType::SevSnp);
        assert!("x=sgx".parse::<NodeArg>().is_err());
        assert!("x".parse::<NodeArg>().is_err());
        assert!("=tdx".parse::<NodeArg>().is_err());
    }
}
