//! AMD Key Distribution Service (KDS, AMD doc 57230) client: the VCEK of a chip at a TCB, and the
//! ASK/ASVK + ARK chain of a product, from a configurable base URL (default
//! <https://kdsintf.amd.com>), cached on disk.
//!
//! ```text
//! {base}/vcek/v1/{Milan|Genoa}/{hex CHIP_ID[0..64]}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..
//! {base}/vcek/v1/Turin/{hex CHIP_ID[0..8]}?fmcSPL=..&blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..
//! {base}/{vcek|vlek}/v1/{product}/cert_chain          (PEM: ASK or ASVK first, then ARK)
//! ```
//!
//! Nothing fetched or cached is trusted: the verifier checks every certificate against the pinned
//! ARK. The cache only saves round trips, so an entry that does not parse, or whose hwID/TCB
//! disagree with its key, is fetched again and overwritten. Writes are atomic (temp + rename).
//! This module owns fetching and caching; it must not decide whether evidence is acceptable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::TeeKind;
use crate::error::{Error, Result};
use crate::evidence::EvidenceBundle;
use crate::policy::Policy;
use crate::snp::amd::amd_extensions;
use crate::snp::report::{Product, SigningKey, SnpReport, Tcb};
use crate::x509::{common_name, parse_cert, pem_certs};

/// AMD's production KDS.
pub const DEFAULT_KDS_URL: &str = "https://kdsintf.amd.com";
/// Per-request deadline (connect + request + response) unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// A VCEK is ~1.4 KiB and a chain ~4 KiB; anything much larger is not a certificate.
const MAX_BODY: usize = 64 * 1024;

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Network,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Network => "network",
        }
    }
}

/// A fetched (or cached) value, with the URL it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched<T> {
    pub value: T,
    pub url: String,
    pub source: Source,
}

/// The ASK (or ASVK) and ARK of a product, DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertChain {
    pub intermediate: Vec<u8>,
    pub ark: Vec<u8>,
}

/// What [`KdsClient::complete_bundle`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Completion {
    /// The VCEK fetch (URL, source), when the bundle had no leaf.
    pub vcek: Option<(String, Source)>,
    /// The chain fetch, when the bundle had no intermediate.
    pub chain: Option<(String, Source)>,
    /// A chain fetch that failed; the built-in pinned intermediate is used instead.
    pub chain_error: Option<String>,
}

/// Fetches VCEKs and chains from KDS, caching them under `cache_dir`.
#[derive(Debug, Clone)]
pub struct KdsClient {
    base_url: String,
    cache_dir: Option<PathBuf>,
    timeout: Duration,
}

/// `$XDG_CACHE_HOME/a3s-power/kds`, else `$HOME/.cache/a3s-power/kds`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("a3s-power").join("kds"))
}

impl KdsClient {
    /// A client for `base_url` (`http://` or `https://`, no query), without a cache.
    pub fn new(base_url: &str) -> Result<KdsClient> {
        let base = base_url.trim_end_matches('/');
        let ok_scheme = base.starts_with("https://") || base.starts_with("http://");
        if !ok_scheme || base.contains(['?', '#', ' ']) || base.ends_with("://") {
            return Err(Error::Policy {
                field: "collateral.amdKdsURL".into(),
                reason: format!("{base_url:?} is not an http(s) base URL without query"),
            });
        }
        Ok(KdsClient {
            base_url: base.to_string(),
            cache_dir: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The client a policy asks for: `override_url`, else `collateral.amdKdsURL`, else AMD's.
    pub fn for_policy(policy: &Policy, override_url: Option<&str>) -> Result<KdsClient> {
        KdsClient::new(
            override_url
                .or(policy.collateral.amd_kds_url.as_deref())
                .unwrap_or(DEFAULT_KDS_URL),
        )
    }

    /// Cache certificates under `dir` (created on first write).
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    /// `{product}/{hwid}?{tcb}` of a VCEK; the hwID is CHIP_ID (Turin: its first 8 bytes, the rest
    /// must be zero). A masked (all-zero) CHIP_ID has no VCEK.
    pub fn vcek_path(product: Product, chip_id: &[u8; 64], tcb: &Tcb) -> Result<String> {
        if chip_id.iter().all(|b| *b == 0) {
            return Err(Error::malformed(
                "SEV-SNP report",
                0x1A0,
                "CHIP_ID is all zero (masked): KDS cannot issue a VCEK for it",
            ));
        }
        let hwid = match product {
            Product::Turin => {
                if chip_id[8..].iter().any(|b| *b != 0) {
                    return Err(Error::malformed(
                        "SEV-SNP report",
                        0x1A8,
                        "Turin CHIP_ID must be zero after its first 8 bytes",
                    ));
                }
                hex::encode(&chip_id[..8])
            }
            Product::Milan | Product::Genoa => hex::encode(chip_id),
        };
        let fmc = match (product, tcb.fmc) {
            (Product::Turin, Some(f)) => format!("fmcSPL={f:02}&"),
            (Product::Turin, None) => {
                return Err(Error::malformed(
                    "SEV-SNP report",
                    0x180,
                    "Turin REPORTED_TCB without an FMC SPL",
                ));
            }
            _ => String::new(),
        };
        Ok(format!(
            "{}/{hwid}?{fmc}blSPL={:02}&teeSPL={:02}&snpSPL={:02}&ucodeSPL={:02}",
            product.name(),
            tcb.bootloader,
            tcb.tee,
            tcb.snp,
            tcb.microcode
        ))
    }

    /// The VCEK URL for a chip at a TCB.
    pub fn vcek_url(&self, product: Product, chip_id: &[u8; 64], tcb: &Tcb) -> Result<String> {
        Ok(format!(
            "{}/vcek/v1/{}",
            self.base_url,
            Self::vcek_path(product, chip_id, tcb)?
        ))
    }

    fn chain_kind(signer: SigningKey) -> &'static str {
        match signer {
            SigningKey::Vcek => "vcek",
            SigningKey::Vlek => "vlek",
        }
    }

    /// The ASK/ASVK + ARK URL of a product.
    pub fn chain_url(&self, product: Product, signer: SigningKey) -> String {
        format!(
            "{}/{}/v1/{}/cert_chain",
            self.base_url,
            Self::chain_kind(signer),
            product.name()
        )
    }

    /// The VCEK (DER) for `chip_id` at `tcb` (REPORTED_TCB), from the cache or KDS.
    pub fn vcek(
        &self,
        product: Product,
        chip_id: &[u8; 64],
        tcb: &Tcb,
    ) -> Result<Fetched<Vec<u8>>> {
        let url = self.vcek_url(product, chip_id, tcb)?;
        let hwid = match product {
            Product::Turin => &chip_id[..8],
            _ => &chip_id[..],
        };
        let key = format!(
            "vcek/{}/{}-{}",
            product.name(),
            hex::encode(hwid),
            hex::encode(tcb.encode(product).to_le_bytes())
        );
        let check = |der: &[u8]| check_vcek(der, product, hwid, tcb);
        self.cached(&url, &key, "der", |raw| {
            let der = if raw.starts_with(b"-----") {
                pem_certs("KDS VCEK", raw)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::cert("KDS VCEK", "empty PEM"))?
            } else {
                raw.to_vec()
            };
            check(&der)?;
            Ok(der)
        })
    }

    /// The ASK (VCEK) or ASVK (VLEK) and ARK of `product`, from the cache or KDS.
    pub fn cert_chain(&self, product: Product, signer: SigningKey) -> Result<Fetched<CertChain>> {
        let url = self.chain_url(product, signer);
        let key = format!("cert_chain/{}/{}", Self::chain_kind(signer), product.name());
        let f = self.cached(&url, &key, "pem", |raw| {
            check_chain(raw, product, signer)?;
            Ok(raw.to_vec())
        })?;
        let (intermediate, ark) = check_chain(&f.value, product, signer)?;
        Ok(Fetched {
            value: CertChain { intermediate, ark },
            url: f.url,
            source: f.source,
        })
    }

    /// Fill in an SEV-SNP bundle without a leaf certificate: the VCEK, and (when the bundle has no
    /// intermediate either) the ASK + ARK. A failed chain fetch is not an error (the pinned
    /// built-in ASK is used; see [`Completion::chain_error`]); a failed VCEK fetch is. Bundles of
    /// other kinds, or with a leaf certificate (their intermediate is built in), are left alone.
    pub fn complete_bundle(&self, bundle: &mut EvidenceBundle) -> Result<Completion> {
        let mut done = Completion::default();
        if bundle.kind != TeeKind::SevSnp || bundle.leaf_cert.is_some() {
            return Ok(done);
        }
        let report = SnpReport::parse(&bundle.evidence)?;
        // v2 reports carry no CPUID: try the products whose KDS paths take a 64-byte hwID.
        let candidates: Vec<Product> = match report.cpuid_product() {
            Some(p) => vec![p],
            None => vec![Product::Milan, Product::Genoa],
        };
        if report.signing_key == SigningKey::Vlek {
            return Err(Error::cert(
                "VLEK",
                "the report is signed by a VLEK, which KDS does not serve by chip: the host \
                 must supply it (extended report / auxblob)",
            ));
        }
        let mut errors = Vec::new();
        let mut got = None;
        for p in candidates {
            let tcb = Tcb::decode(report.reported_tcb, p);
            match self.vcek(p, &report.chip_id, &tcb) {
                Ok(f) => {
                    got = Some((p, f));
                    break;
                }
                Err(e) => errors.push(e),
            }
        }
        let (product, f) = match got {
            Some(x) => x,
            None if errors.len() == 1 => return Err(errors.remove(0)),
            None => {
                return Err(Error::Fetch {
                    url: self.base_url.clone(),
                    reason: format!(
                        "no VCEK for this version-2 report as Milan or Genoa: {}",
                        errors
                            .iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                });
            }
        };
        bundle.leaf_cert = Some(f.value);
        done.vcek = Some((f.url, f.source));
        if bundle.intermediate_cert.is_none() {
            match self.cert_chain(product, report.signing_key) {
                Ok(f) => {
                    bundle.intermediate_cert = Some(f.value.intermediate);
                    if bundle.root_cert.is_none() {
                        bundle.root_cert = Some(f.value.ark);
                    }
                    done.chain = Some((f.url, f.source));
                }
                Err(e) => done.chain_error = Some(e.to_string()),
            }
        }
        Ok(done)
    }

    /// Cache lookup by `key`; on a miss or an entry `decode` rejects, GET `url`, decode, store.
    fn cached(
        &self,
        url: &str,
        key: &str,
        ext: &str,
        decode: impl Fn(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<Fetched<Vec<u8>>> {
        let path = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{key}.{ext}")));
        if let Some(p) = &path
            && let Ok(raw) = std::fs::read(p)
            && let Ok(v) = decode(&raw)
        {
            return Ok(Fetched {
                value: v,
                url: url.to_string(),
                source: Source::Cache,
            });
        }
        let resp = crate::fetch::get(url, self.timeout, MAX_BODY)?;
        let value = decode(&resp.body).map_err(|e| Error::Fetch {
            url: url.to_string(),
            reason: format!("response is not the expected certificate: {e}"),
        })?;
        if let Some(p) = &path {
            // A cache that cannot be written costs a fetch next time, nothing more.
            let _ = write_atomic(p, &value);
        }
        Ok(Fetched {
            value,
            url: url.to_string(),
            source: Source::Network,
        })
    }
}

/// A VCEK for this product, hwID and TCB (structure only; signatures are the verifier's job).
fn check_vcek(der: &[u8], product: Product, hwid: &[u8], tcb: &Tcb) -> Result<()> {
    let c = parse_cert("KDS VCEK", der)?;
    let cn = common_name(&c);
    if cn != "SEV-VCEK" {
        return Err(Error::cert(
            "KDS VCEK",
            format!("CN is {cn:?}, expected SEV-VCEK"),
        ));
    }
    let ext = amd_extensions(&c)?;
    if ext.hw_id.as_deref() != Some(hwid) {
        return Err(Error::cert(
            "KDS VCEK",
            format!(
                "hwID {} differs from the requested {}",
                ext.hw_id.as_deref().map_or("absent".into(), hex::encode),
                hex::encode(hwid)
            ),
        ));
    }
    let got = Tcb {
        fmc: ext.fmc_spl,
        bootloader: ext.bl_spl.unwrap_or(u8::MAX),
        tee: ext.tee_spl.unwrap_or(u8::MAX),
        snp: ext.snp_spl.unwrap_or(u8::MAX),
        microcode: ext.ucode_spl.unwrap_or(u8::MAX),
    };
    let want = Tcb {
        fmc: if product == Product::Turin {
            tcb.fmc
        } else {
            got.fmc
        },
        ..*tcb
    };
    if got != want {
        return Err(Error::cert(
            "KDS VCEK",
            format!("TCB {got} differs from the requested {want}"),
        ));
    }
    Ok(())
}

/// Two PEM certificates: the product's ASK (or ASVK), then its ARK.
fn check_chain(pem: &[u8], product: Product, signer: SigningKey) -> Result<(Vec<u8>, Vec<u8>)> {
    let which = "KDS cert_chain";
    let mut v = pem_certs(which, pem)?;
    if v.len() != 2 {
        return Err(Error::cert(
            which,
            format!("{} certificates, expected 2 (intermediate, ARK)", v.len()),
        ));
    }
    let ark = v.remove(1);
    let inter = v.remove(0);
    let want_inter = match signer {
        SigningKey::Vcek => format!("SEV-{}", product.name()),
        SigningKey::Vlek => format!("SEV-VLEK-{}", product.name()),
    };
    let want_ark = format!("ARK-{}", product.name());
    for (der, want) in [(&inter, &want_inter), (&ark, &want_ark)] {
        let cn = common_name(&parse_cert(which, der)?);
        if &cn != want {
            return Err(Error::cert(which, format!("CN {cn:?}, expected {want}")));
        }
    }
    Ok((inter, ark))
}

/// Write `data` to `path` through a temporary file in the same directory and a rename, so a
/// reader sees the old file or the new one, never half of one.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::io(path.display(), std::io::ErrorKind::InvalidInput.into()))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{:016x}",
        std::process::id(),
        rand_core::RngCore::next_u64(&mut rand_core::OsRng)
    ));
    let res = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(tmp.display(), e))?;
        f.write_all(data).map_err(|e| Error::io(tmp.display(), e))?;
        f.sync_all().map_err(|e| Error::io(tmp.display(), e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path.display(), e))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn vcek_paths_per_product() {
        let mut chip = [0u8; 64];
        chip[..8].copy_from_slice(&[0xcd; 8]);
        let turin = Tcb::decode(0x5100000004010101, Product::Turin);
        assert_eq!(
            KdsClient::vcek_path(Product::Turin, &chip, &turin).unwrap(),
            "Turin/cdcdcdcdcdcdcdcd?fmcSPL=01&blSPL=01&teeSPL=01&snpSPL=04&ucodeSPL=81"
        );
        chip[9] = 1;
        assert!(KdsClient::vcek_path(Product::Turin, &chip, &turin).is_err());
        let milan = Tcb::decode(0x7308000000000003, Product::Milan);
        let p = KdsClient::vcek_path(Product::Milan, &chip, &milan).unwrap();
        assert!(
            p.starts_with(&format!("Milan/{}?", hex::encode(chip))),
            "{p}"
        );
        assert!(
            p.ends_with("?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"),
            "{p}"
        );
        assert!(KdsClient::vcek_path(Product::Genoa, &[0; 64], &milan).is_err());
        let c = KdsClient::new("http://127.0.0.1:1/").unwrap();
        assert_eq!(
            c.chain_url(Product::Genoa, SigningKey::Vlek),
            "http://127.0.0.1:1/vlek/v1/Genoa/cert_chain"
        );
        assert!(
            c.vcek_url(Product::Milan, &chip, &milan)
                .unwrap()
                .starts_with("http://127.0.0.1:1/vcek/v1/Milan/")
        );
    }

    #[test]
    fn base_urls() {
        for bad in [
            "",
            "kdsintf.amd.com",
            "ftp://x",
            "https://",
            "https://x/?a=1",
        ] {
            assert!(KdsClient::new(bad).is_err(), "{bad}");
        }
        let p = Policy::default();
        assert_eq!(
            KdsClient::for_policy(&p, None).unwrap().base_url(),
            DEFAULT_KDS_URL
        );
        let mut p = Policy::default();
        p.collateral.amd_kds_url = Some("http://kds.local:8080".into());
        assert_eq!(
            KdsClient::for_policy(&p, None).unwrap().base_url(),
            "http://kds.local:8080"
        );
        assert_eq!(
            KdsClient::for_policy(&p, Some("http://o"))
                .unwrap()
                .base_url(),
            "http://o"
        );
    }
}
