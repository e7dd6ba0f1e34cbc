//! `a3s-power seal FILE --key K`: SHA-256 the model and write `FILE.sig` (Ed25519 over
//! `"a3s-power/model/v1" || 0x00 || sha256`, hex).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use power_attest::model_seal;

#[derive(Debug, Args)]
pub struct SealArgs {
    /// The plaintext GGUF model.
    pub file: PathBuf,
    /// Secret signing key from `a3s-power keygen --kind signing`.
    #[arg(long)]
    pub key: PathBuf,
}

pub fn run(a: SealArgs) -> Result<()> {
    let sk = model_seal::load_signing_key(&a.key)?;
    let (digest, sig) = model_seal::seal_file(&a.file, &sk)
        .with_context(|| format!("sealing {}", a.file.display()))?;
    // Check what we wrote with the public half, as a loader would.
    model_seal::verify_file(&a.file, &sk.verifying_key(), Some(&digest))?;
    eprintln!("signature: {}", sig.display());
    eprintln!("public key: {}", hex::encode(sk.verifying_key().to_bytes()));
    println!("sha256:{}", hex::encode(digest));
    Ok(())
}
