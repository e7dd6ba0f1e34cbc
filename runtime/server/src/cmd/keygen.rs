//! `a3s-power keygen`: a model-signing key pair (Ed25519) or a model encryption key (AES-256).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use power_attest::model_crypt::ModelKey;
use power_attest::model_seal;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyKind {
    /// Ed25519 key pair for `a3s-power seal` (writes OUT and OUT.pub).
    Signing,
    /// 256-bit key for `a3s-power encrypt` (writes OUT).
    Model,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// What kind of key to generate.
    #[arg(long, value_enum, default_value = "signing")]
    pub kind: KeyKind,
    /// Output file for the secret key (hex, mode 0600). Refuses to overwrite.
    #[arg(long, short)]
    pub out: PathBuf,
}

fn write_secret(path: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (refusing to overwrite)", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

pub fn run(a: KeygenArgs) -> Result<()> {
    match a.kind {
        KeyKind::Signing => {
            let sk = model_seal::generate_signing_key();
            write_secret(&a.out, &model_seal::signing_key_hex(&sk))?;
            let public = hex::encode(sk.verifying_key().to_bytes());
            let mut pub_path = a.out.clone().into_os_string();
            pub_path.push(".pub");
            std::fs::write(&pub_path, format!("{public}\n"))
                .with_context(|| format!("writing {}", PathBuf::from(&pub_path).display()))?;
            eprintln!("secret key: {}", a.out.display());
            eprintln!("public key: {}", PathBuf::from(&pub_path).display());
            println!("{public}");
        }
        KeyKind::Model => {
            let k = ModelKey::generate();
            write_secret(&a.out, &k.to_hex())?;
            eprintln!("model key: {}", a.out.display());
            println!("key id {}", hex::encode(k.key_id()));
        }
    }
    Ok(())
}
