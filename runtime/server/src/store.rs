//! The model store: content-addressed blobs (`models/blobs/sha256-<hex>`) and one JSON manifest
//! per model name (`models/manifests/`). Every blob is hashed while it is written and renamed into
//! place only when its digest is known (and matches its pin, if any), so a partially written or
//! mismatching file is never registered. Synchronous: async callers use `spawn_blocking`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One registered model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    /// SHA-256 of the file (hex); for `.enc` files, of the ciphertext as stored.
    pub sha256: String,
    pub size: u64,
    /// The file the engine loads: a blob, or a file registered by reference (config `models`).
    pub path: PathBuf,
    /// `"gguf"` or `"gguf-encrypted"`.
    pub format: String,
    /// Unix seconds.
    pub created: u64,
    /// Where it came from (a URL, `hf:owner/repo/file`, a local path).
    pub source: String,
    /// `.enc` files: SHA-256 of the plaintext GGUF (hex), the model's identity (DESIGN §3.5),
    /// recorded once a decryption has computed and checked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext_sha256: Option<String>,
}

impl Manifest {
    pub fn is_encrypted(&self) -> bool {
        self.format == "gguf-encrypted"
    }

    /// The model's identity, the SHA-256 of its plaintext GGUF, as attestation binds it: the
    /// file's digest, or for an `.enc` file the recorded plaintext digest (`None` until a
    /// decryption has verified it).
    pub fn identity(&self) -> Option<[u8; 32]> {
        let hex_digest = if self.is_encrypted() {
            self.plaintext_sha256.as_deref()?
        } else {
            &self.sha256
        };
        hex::decode(hex_digest)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
    }
}

/// The on-disk store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Model names: 1-200 characters of `[A-Za-z0-9._:/@+-]`, no `..`, no leading `/`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.contains("..")
        && !name.starts_with('/')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/@+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Store(
            "invalid model name: expected 1-200 characters of letters, digits and ._:/@+-".into(),
        ))
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A file name for `name` that is unique, filesystem-safe and still readable.
pub fn file_stem(name: &str) -> String {
    let readable: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let h = Sha256::digest(name.as_bytes());
    format!("{readable}-{}", hex::encode(&h[..6]))
}

/// Hashes everything written through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    pub inner: W,
    pub hasher: Sha256,
    pub written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// `"gguf"` or `"gguf-encrypted"`, from the file's magic.
pub fn detect_format(path: &Path) -> Result<&'static str> {
    let mut magic = [0u8; 8];
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let n = f.read(&mut magic).map_err(|e| Error::io(path, e))?;
    if n >= 4 && &magic[..4] == b"GGUF" {
        Ok("gguf")
    } else if n == 8 && &magic == b"A3SPENC1" {
        Ok("gguf-encrypted")
    } else {
        Err(Error::Store(
            "not a GGUF file (or an A3SPENC1 encrypted model): bad magic".into(),
        ))
    }
}

impl Store {
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let s = Store { root: root.into() };
        for d in [
            s.blobs_dir(),
            s.manifests_dir(),
            s.partials_dir(),
            s.pulls_dir(),
        ] {
            fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }
    pub fn manifests_dir(&self) -> PathBuf {
        self.root.join("manifests")
    }
    /// Partial downloads, named by the SHA-256 of their URL so a retry resumes them.
    pub fn partials_dir(&self) -> PathBuf {
        self.root.join("partials")
    }
    /// Persisted pull status documents.
    pub fn pulls_dir(&self) -> PathBuf {
        self.root.join("pulls")
    }
    pub fn blob_path(&self, sha256_hex: &str) -> PathBuf {
        self.blobs_dir().join(format!("sha256-{sha256_hex}"))
    }
    fn manifest_path(&self, name: &str) -> PathBuf {
        self.manifests_dir()
            .join(format!("{}.json", file_stem(name)))
    }

    pub fn list(&self) -> Result<Vec<Manifest>> {
        let dir = self.manifests_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let e = e.map_err(|e| Error::io(&dir, e))?;
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                // A corrupt manifest is skipped, not fatal: the rest of the store still serves.
                if let Ok(m) = fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
                    .ok_or(())
                {
                    out.push(m);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Result<Option<Manifest>> {
        validate_name(name)?;
        let p = self.manifest_path(name);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Store(format!("manifest {}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    fn write_manifest(&self, m: &Manifest) -> Result<()> {
        let p = self.manifest_path(&m.name);
        let tmp = p.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(m).map_err(|e| Error::Store(e.to_string()))?;
        fs::write(&tmp, body).map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &p).map_err(|e| Error::io(&p, e))
    }

    /// Moves a fully written, hashed file into the blob store and registers `name` for it.
    /// `pin` (hex) must equal `digest` or the file is deleted and nothing is registered.
    pub fn commit_blob(
        &self,
        name: &str,
        file: &Path,
        digest: [u8; 32],
        size: u64,
        pin: Option<&str>,
        source: &str,
    ) -> Result<Manifest> {
        validate_name(name)?;
        let hex_digest = hex::encode(digest);
        if let Some(pin) = pin
            && !pin.eq_ignore_ascii_case(&hex_digest)
        {
            let _ = fs::remove_file(file);
            return Err(Error::Verification {
                model: name.to_string(),
                reason: format!("SHA-256 mismatch: expected {pin}, got {hex_digest}"),
            });
        }
        let format = match detect_format(file) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(file);
                return Err(e);
            }
        };
        let blob = self.blob_path(&hex_digest);
        if blob.exists() {
            let _ = fs::remove_file(file);
        } else {
            fs::rename(file, &blob).map_err(|e| Error::io(&blob, e))?;
        }
        let m = Manifest {
            name: name.to_string(),
            sha256: hex_digest,
            size,
            path: blob,
            format: format.to_string(),
            created: now_unix(),
            source: source.to_string(),
            plaintext_sha256: None,
        };
        self.write_manifest(&m)?;
        Ok(m)
    }

    /// Copies a local file into the store, hashing while writing.
    pub fn register_copy(&self, name: &str, src: &Path, pin: Option<&str>) -> Result<Manifest> {
        validate_name(name)?;
        let mut input = File::open(src).map_err(|e| Error::io(src, e))?;
        let tmp = self.partials_dir().join(format!(
            "register-{}-{}.tmp",
            file_stem(name),
            rand::random::<u32>()
        ));
        let out = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut w = HashingWriter::new(std::io::BufWriter::new(out));
        let copied = std::io::copy(&mut input, &mut w).and_then(|_| w.flush());
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(src, e));
        }
        let digest: [u8; 32] = w.hasher.finalize().into();
        self.commit_blob(
            name,
            &tmp,
            digest,
            w.written,
            pin,
            &src.display().to_string(),
        )
    }

    /// Registers a file in place (config `models` block): no copy, digest computed now.
    pub fn register_reference(
        &self,
        name: &str,
        path: &Path,
        pin: Option<&str>,
    ) -> Result<Manifest> {
        validate_name(name)?;
        let format = detect_format(path)?;
        let digest = hex::encode(sha256_file(path)?);
        if let Some(pin) = pin
            && !pin.eq_ignore_ascii_case(&digest)
        {
            return Err(Error::Verification {
                model: name.to_string(),
                reason: format!("SHA-256 mismatch: expected {pin}, got {digest}"),
            });
        }
        let size = fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        let m = Manifest {
            name: name.to_string(),
            sha256: digest,
            size,
            path: path.to_path_buf(),
            format: format.to_string(),
            created: now_unix(),
            source: path.display().to_string(),
            plaintext_sha256: None,
        };
        self.write_manifest(&m)?;
        Ok(m)
    }

    /// Records the verified plaintext digest of the encrypted model `name` (see
    /// [`Manifest::identity`]), unless the manifest now points at another file.
    pub fn record_plaintext_sha256(&self, m: &Manifest, digest: &[u8; 32]) -> Result<()> {
        let Some(mut cur) = self.get(&m.name)? else {
            return Ok(());
        };
        let hex_digest = hex::encode(digest);
        if cur.sha256 != m.sha256 || cur.plaintext_sha256.as_deref() == Some(hex_digest.as_str()) {
            return Ok(());
        }
        cur.plaintext_sha256 = Some(hex_digest);
        self.write_manifest(&cur)
    }

    /// Deregisters `name`; its blob is removed when no other manifest uses it.
    pub fn delete(&self, name: &str) -> Result<Manifest> {
        let m = self
            .get(name)?
            .ok_or_else(|| Error::ModelNotFound(name.to_string()))?;
        let p = self.manifest_path(name);
        fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        let blob = self.blob_path(&m.sha256);
        if m.path == blob && !self.list()?.iter().any(|o| o.sha256 == m.sha256) {
            let _ = fs::remove_file(&blob);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty directory, removed when the returned guard drops.
    fn tmpdir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("a3s-store-{tag}-"))
            .tempdir()
            .expect("tmp")
    }

    fn fake_gguf(dir: &Path, body: &[u8]) -> PathBuf {
        let p = dir.join(format!("m-{}.gguf", rand::random::<u32>()));
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(body);
        fs::write(&p, b).expect("write");
        p
    }

    #[test]
    fn register_list_get_delete() {
        let tmp = tmpdir("rld");
        let d = tmp.path();
        let s = Store::open(d.join("models")).expect("open");
        let f = fake_gguf(d, b"hello");
        let m = s.register_copy("org/model:Q4", &f, None).expect("register");
        assert_eq!(m.sha256, hex::encode(sha256_file(&f).expect("hash")));
        assert!(m.path.starts_with(s.blobs_dir()));
        assert_eq!(m.format, "gguf");
        let m2 = s.register_copy("alias", &f, None).expect("register");
        assert_eq!(m2.path, m.path, "same content, same blob");
        assert_eq!(s.list().expect("list").len(), 2);
        assert_eq!(s.get("org/model:Q4").expect("get"), Some(m.clone()));
        s.delete("org/model:Q4").expect("delete");
        assert!(m.path.exists(), "still used by alias");
        s.delete("alias").expect("delete");
        assert!(!m.path.exists(), "last user gone");
        assert!(matches!(s.delete("alias"), Err(Error::ModelNotFound(_))));
    }

    #[test]
    fn pin_mismatch_never_registers() {
        let tmp = tmpdir("pin");
        let d = tmp.path();
        let s = Store::open(d.join("models")).expect("open");
        let f = fake_gguf(d, b"x");
        let e = s
            .register_copy("m", &f, Some(&"0".repeat(64)))
            .expect_err("mismatch");
        assert!(matches!(e, Error::Verification { .. }), "{e}");
        assert_eq!(s.get("m").expect("get"), None);
        assert_eq!(fs::read_dir(s.blobs_dir()).expect("dir").count(), 0);
        assert_eq!(fs::read_dir(s.partials_dir()).expect("dir").count(), 0);
    }

    #[test]
    fn rejects_bad_names_and_non_gguf() {
        let tmp = tmpdir("bad");
        let d = tmp.path();
        let s = Store::open(d.join("models")).expect("open");
        for n in ["", "../x", "/abs", "a b", "x\n"] {
            assert!(validate_name(n).is_err(), "{n:?}");
        }
        let p = d.join("not.gguf");
        fs::write(&p, b"PK\x03\x04zip").expect("write");
        assert!(s.register_copy("m", &p, None).is_err());
        assert_eq!(s.get("m").expect("get"), None);
    }
}
