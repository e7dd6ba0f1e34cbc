//! Encrypted models (`.enc`, DESIGN §3.5) in the server: the key provider and decryption mode
//! the configuration selects, the plaintext checks that run before a model serves a token, and
//! the streaming byte source picolm reads an `.enc` file through.
//!
//! Modes (`in_memory_decrypt`, `streaming_decrypt`, neither = file):
//! - **file**: the plaintext goes to a 0600 temporary file under `data_dir/tmp`, overwritten
//!   and removed when the model is unloaded; picolm maps it like any GGUF.
//! - **memory**: the plaintext goes to locked (mlock), zeroize-on-drop memory; picolm reads it
//!   in place. Nothing is written to disk.
//! - **streaming**: nothing is decrypted ahead of use. picolm stages one layer at a time
//!   through [`StreamingPlaintext`], which decrypts only the chunks covering the requested
//!   bytes; the staged plaintext is wiped after each layer. Nothing is written to disk.
//!
//! In every mode the plaintext SHA-256 is computed while decrypting (streaming mode: one full
//! verifying pass at load, keeping nothing) and must equal the `model_hashes` pin, and the
//! `.sig` (when `model_signing_key` is set) must verify over it, before the model is handed to
//! the engine. Errors name the file and the chunk; they never carry plaintext or key bytes.

use std::path::{Path, PathBuf};

use picolm::source::ByteSource;
use picolm::{GgufFile, MemorySource};
use power_attest::model_crypt::{
    EncryptedModel, KeyProvider, RotatingKeyProvider, StaticKeyProvider, TempPlaintext,
};
use prometheus::IntCounterVec;
use rayon::prelude::*;
use zeroize::Zeroize;

use crate::config::{Config, KeySource};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::Manifest;

/// How an `.enc` model is decrypted, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecryptionMode {
    File,
    Memory,
    Streaming,
}

impl DecryptionMode {
    pub fn from_config(cfg: &Config) -> Self {
        if cfg.streaming_decrypt {
            DecryptionMode::Streaming
        } else if cfg.in_memory_decrypt {
            DecryptionMode::Memory
        } else {
            DecryptionMode::File
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DecryptionMode::File => "file",
            DecryptionMode::Memory => "memory",
            DecryptionMode::Streaming => "streaming",
        }
    }
}

/// The key provider the configuration describes (`key_provider`, `model_key_source`,
/// `key_rotation_sources`).
pub fn key_provider(cfg: &Config) -> Result<Box<dyn KeyProvider>> {
    let one = |s: &KeySource| -> Result<StaticKeyProvider> {
        Ok(match s {
            KeySource::File(p) => StaticKeyProvider::from_file(p)?,
            KeySource::Env(v) => StaticKeyProvider::from_env(v)?,
        })
    };
    if cfg.key_provider == "rotating" {
        let mut keys = Vec::new();
        for s in &cfg.key_rotation_sources {
            keys.push(one(s)?.current()?);
        }
        if keys.is_empty() {
            return Err(Error::Other("key_rotation_sources is empty".into()));
        }
        let current = keys.remove(0);
        return Ok(Box::new(RotatingKeyProvider {
            current,
            previous: keys,
        }));
    }
    let src = cfg.model_key_source.as_ref().ok_or_else(|| {
        Error::Other("an encrypted model needs `model_key_source` in the configuration".into())
    })?;
    Ok(Box::new(one(src)?))
}

/// An `.enc` file as picolm's streaming source: `read_at` decrypts and authenticates only the
/// chunks covering the range, in place in picolm's staging buffer.
#[derive(Debug)]
pub struct StreamingPlaintext(EncryptedModel);

impl StreamingPlaintext {
    pub fn new(enc: EncryptedModel) -> Self {
        StreamingPlaintext(enc)
    }
}

impl ByteSource for StreamingPlaintext {
    fn len(&self) -> u64 {
        self.0.plaintext_len()
    }
    fn resident(&self) -> Option<&[u8]> {
        None
    }
    /// Chunks are independent, so a large range (a layer) is decrypted by the engine's worker
    /// threads in chunk-aligned pieces; a small one (an embedding row) on the calling thread.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> picolm::Result<()> {
        let r = self.read_parallel(offset, buf);
        if r.is_err() {
            // Pieces that did decrypt must not outlive the failure.
            buf.zeroize();
        }
        r.map_err(|e| picolm::Error::Source(e.to_string()))
    }
}

/// Below this, one thread decrypts the whole range.
const PARALLEL_MIN: usize = 2 << 20;

impl StreamingPlaintext {
    fn read_parallel(&self, offset: u64, buf: &mut [u8]) -> power_attest::Result<()> {
        let cs = self.0.header.chunk_size as usize;
        let threads = rayon::current_num_threads();
        if buf.len() < PARALLEL_MIN || threads < 2 {
            return self.0.read_into(offset, buf);
        }
        // The head up to the first chunk boundary, then pieces of whole chunks (the last one
        // may end inside a chunk), about two per thread.
        let to_boundary = (cs - (offset % cs as u64) as usize) % cs;
        let (head, rest) = buf.split_at_mut(to_boundary.min(buf.len()));
        self.0.read_into(offset, head)?;
        let piece = rest
            .len()
            .div_ceil(2 * threads)
            .next_multiple_of(cs)
            .max(cs);
        let base = offset + head.len() as u64;
        rest.par_chunks_mut(piece)
            .enumerate()
            .try_for_each(|(i, p)| self.0.read_into(base + (i * piece) as u64, p))
    }
}

/// An encrypted model opened for picolm, and what must live as long as the engine uses it.
#[derive(Debug)]
pub struct OpenedModel {
    pub file: GgufFile,
    pub mode: DecryptionMode,
    /// SHA-256 of the plaintext, verified against the pin (if any) before this was returned.
    pub plaintext_sha256: [u8; 32],
    /// File mode: the temporary plaintext, overwritten and removed when dropped.
    pub temp: Option<TempPlaintext>,
}

fn pin_of(cfg: &Config, manifest: &Manifest) -> Option<[u8; 32]> {
    cfg.model_hashes
        .get(&manifest.name)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
}

/// What to check and where file mode may write, for [`open_path`].
#[derive(Clone, Debug)]
pub struct OpenOptions {
    pub mode: DecryptionMode,
    /// Expected plaintext SHA-256.
    pub pin: Option<[u8; 32]>,
    /// Ed25519 public key (hex): `<file>.sig` must verify over the plaintext digest.
    pub signing_key: Option<String>,
    /// File mode's directory for the temporary plaintext.
    pub tmp_dir: PathBuf,
}

impl OpenOptions {
    pub fn from_config(cfg: &Config, manifest: &Manifest) -> Self {
        OpenOptions {
            mode: DecryptionMode::from_config(cfg),
            pin: pin_of(cfg, manifest),
            signing_key: cfg.model_signing_key.clone(),
            tmp_dir: cfg.data_dir.join("tmp"),
        }
    }
}

/// `<path>.sig` must verify over the plaintext digest when a signing key is configured.
fn check_signature(o: &OpenOptions, path: &Path, digest: &[u8; 32]) -> Result<()> {
    let Some(k) = &o.signing_key else {
        return Ok(());
    };
    let key = power_attest::model_seal::parse_verifying_key("model_signing_key", k)?;
    let sp = power_attest::model_seal::sig_path(path);
    let sig = std::fs::read_to_string(&sp).map_err(|e| Error::io(&sp, e))?;
    power_attest::model_seal::verify(&key, digest, sig.trim())?;
    Ok(())
}

/// Decrypt and authenticate every chunk of `manifest`'s `.enc` file, keeping nothing, and
/// check the plaintext digest against its pin and signature (start-up verification).
pub fn verify(cfg: &Config, manifest: &Manifest, metrics: &Metrics) -> Result<[u8; 32]> {
    let o = OpenOptions::from_config(cfg, manifest);
    let r = (|| {
        let keys = key_provider(cfg)?;
        let enc = EncryptedModel::open(&manifest.path, keys.as_ref())?;
        let digest = enc.plaintext_digest(o.pin.as_ref())?;
        check_signature(&o, &manifest.path, &digest)?;
        Ok(digest)
    })();
    count(&metrics.model_verifications, manifest, r)
}

/// Open `manifest`'s `.enc` file in the configured mode (see [`open_path`]), counting the
/// outcome; any failure is a verification error naming the model.
pub fn open(cfg: &Config, manifest: &Manifest, metrics: &Metrics) -> Result<OpenedModel> {
    let o = OpenOptions::from_config(cfg, manifest);
    let r = key_provider(cfg).and_then(|keys| open_path(&manifest.path, keys.as_ref(), &o));
    let r = count(&metrics.model_decryptions, manifest, r);
    match &r {
        Ok(m) => tracing::info!(
            model = %manifest.name,
            mode = m.mode.name(),
            sha256 = %hex::encode(m.plaintext_sha256),
            "encrypted model decrypted and verified"
        ),
        // The error names the file, the key id or the chunk; never plaintext or key bytes.
        Err(e) => tracing::warn!(
            model = %manifest.name,
            mode = o.mode.name(),
            error = %e,
            "encrypted model refused"
        ),
    }
    r
}

/// Open an `.enc` file for picolm in `o.mode`. Every chunk has been authenticated and the
/// plaintext digest checked (pin, signature) when this returns `Ok`.
pub fn open_path(path: &Path, keys: &dyn KeyProvider, o: &OpenOptions) -> Result<OpenedModel> {
    let enc = EncryptedModel::open(path, keys)?;
    let pin = o.pin.as_ref();
    let (file, digest, temp) = match o.mode {
        DecryptionMode::File => {
            std::fs::create_dir_all(&o.tmp_dir).map_err(|e| Error::io(&o.tmp_dir, e))?;
            let temp = enc.decrypt_to_temp_file(&o.tmp_dir, pin)?;
            let digest = temp.sha256();
            check_signature(o, path, &digest)?;
            (GgufFile::open(temp.path())?, digest, Some(temp))
        }
        DecryptionMode::Memory => {
            let plain = enc.decrypt_to_memory(pin)?;
            let digest = plain.sha256();
            check_signature(o, path, &digest)?;
            if !plain.is_locked() {
                tracing::warn!(
                    bytes = plain.as_bytes().len(),
                    "in_memory_decrypt: mlock failed (RLIMIT_MEMLOCK?); the plaintext is not locked against swap"
                );
            }
            let source = MemorySource::new(path.display().to_string(), plain);
            (GgufFile::from_source(path, Box::new(source))?, digest, None)
        }
        DecryptionMode::Streaming => {
            // The full verifying pass: no token before every chunk has authenticated and the
            // digest matches. Nothing decrypted here is kept.
            let digest = enc.plaintext_digest(pin)?;
            check_signature(o, path, &digest)?;
            let source = StreamingPlaintext::new(enc);
            (GgufFile::from_source(path, Box::new(source))?, digest, None)
        }
    };
    Ok(OpenedModel {
        file,
        mode: o.mode,
        plaintext_sha256: digest,
        temp,
    })
}

/// Count the outcome and turn any failure into a verification error naming the model.
fn count<T>(c: &IntCounterVec, manifest: &Manifest, r: Result<T>) -> Result<T> {
    match r {
        Ok(v) => {
            c.with_label_values(&["ok"]).inc();
            Ok(v)
        }
        Err(e) => {
            c.with_label_values(&["failed"]).inc();
            Err(match e {
                Error::Verification { .. } => e,
                other => Error::Verification {
                    model: manifest.name.clone(),
                    reason: other.to_string(),
                },
            })
        }
    }
}
