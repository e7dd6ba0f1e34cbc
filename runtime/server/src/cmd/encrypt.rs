//! `a3s-power encrypt FILE --key K`: chunked AES-256-GCM `.enc` (see power_attest::model_crypt).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use power_attest::model_crypt::{self, EncryptedModel, KeyProvider, StaticKeyProvider};

#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// The plaintext GGUF model.
    pub file: PathBuf,
    /// Model key file from `a3s-power keygen --kind model` (hex).
    #[arg(long)]
    pub key: PathBuf,
    /// Output path; default FILE.enc.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Plaintext bytes per chunk (4 KiB ..= 64 MiB).
    #[arg(long, default_value_t = model_crypt::DEFAULT_CHUNK)]
    pub chunk_size: u32,
}

pub fn run(a: EncryptArgs) -> Result<()> {
    let keys = StaticKeyProvider::from_file(&a.key)?;
    let out = a.out.unwrap_or_else(|| {
        let mut s = a.file.clone().into_os_string();
        s.push(".enc");
        PathBuf::from(s)
    });
    let (header, digest) = model_crypt::encrypt_file(&a.file, &out, &keys.current()?, a.chunk_size)
        .with_context(|| format!("encrypting {}", a.file.display()))?;
    // Read it back: every chunk authenticates and the plaintext digest matches.
    EncryptedModel::open(&out, &keys)?.verify_digest(&digest)?;
    eprintln!(
        "wrote {} ({} chunks of {} bytes, key id {})",
        out.display(),
        header.chunk_count(),
        header.chunk_size,
        hex::encode(header.key_id)
    );
    println!("sha256:{}", hex::encode(digest));
    Ok(())
}
