//! Model identity and sealing (DESIGN §3.5): identity = SHA-256 of the plaintext GGUF; seal =
//! Ed25519 over `"a3s-power/model/v1" || 0x00 || sha256`, stored as `<file>.sig` (hex).

use std::io::Read;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result, parse_hex};
use crate::oids::MODEL_SEAL_TAG;

/// The signed message for a model digest.
pub fn seal_message(model_sha256: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(MODEL_SEAL_TAG.len() + 33);
    m.extend_from_slice(MODEL_SEAL_TAG);
    m.push(0);
    m.extend_from_slice(model_sha256);
    m
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path.display(), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path.display(), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// `<file>.sig`.
pub fn sig_path(model: &Path) -> PathBuf {
    let mut s = model.as_os_str().to_os_string();
    s.push(".sig");
    PathBuf::from(s)
}

/// A new signing key (the secret key file holds its 32-byte seed in hex).
pub fn generate_signing_key() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// Hex of the secret seed (zeroized on drop).
pub fn signing_key_hex(k: &SigningKey) -> Zeroizing<String> {
    Zeroizing::new(hex::encode(k.to_bytes()))
}

/// Load a signing key from a hex file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let text =
        Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::io(path.display(), e))?);
    let seed = Zeroizing::new(parse_hex::<32>(&path.display().to_string(), text.trim())?);
    Ok(SigningKey::from_bytes(&seed))
}

/// Parse a public key (64 hex).
pub fn parse_verifying_key(field: &str, hex_key: &str) -> Result<VerifyingKey> {
    let b = parse_hex::<32>(field, hex_key)?;
    VerifyingKey::from_bytes(&b)
        .map_err(|e| Error::Seal(format!("{field}: not an Ed25519 public key: {e}")))
}

/// Sign a model digest; returns the signature hex written to `.sig` files.
pub fn sign(key: &SigningKey, model_sha256: &[u8; 32]) -> String {
    hex::encode(key.sign(&seal_message(model_sha256)).to_bytes())
}

/// Verify a `.sig` (hex) over `model_sha256`.
pub fn verify(key: &VerifyingKey, model_sha256: &[u8; 32], sig_hex: &str) -> Result<()> {
    let sig = parse_hex::<64>("signature", sig_hex)?;
    key.verify(&seal_message(model_sha256), &Signature::from_bytes(&sig))
        .map_err(|_| {
            Error::Seal(format!(
                "signature does not verify for model sha256 {}",
                hex::encode(model_sha256)
            ))
        })
}

/// Seal a file: hash it, sign, write `<file>.sig`. Returns (sha256, sig path).
pub fn seal_file(model: &Path, key: &SigningKey) -> Result<([u8; 32], PathBuf)> {
    let digest = sha256_file(model)?;
    let p = sig_path(model);
    std::fs::write(&p, sign(key, &digest) + "\n").map_err(|e| Error::io(p.display(), e))?;
    Ok((digest, p))
}

/// Verify a model at load: its digest must equal `pinned` (when given) and its `.sig` must
/// verify under `key`. Returns the digest.
pub fn verify_file(
    model: &Path,
    key: &VerifyingKey,
    pinned: Option<&[u8; 32]>,
) -> Result<[u8; 32]> {
    let digest = sha256_file(model)?;
    if let Some(p) = pinned
        && p != &digest
    {
        return Err(Error::Seal(format!(
            "{}: sha256 {} differs from the pinned {}",
            model.display(),
            hex::encode(digest),
            hex::encode(p)
        )));
    }
    let sp = sig_path(model);
    let sig = std::fs::read_to_string(&sp).map_err(|e| Error::io(sp.display(), e))?;
    verify(key, &digest, sig.trim())?;
    Ok(digest)
}
