//! Opening a model for the offline subcommands (`run`, `bench`): a plaintext GGUF is mapped;
//! an encrypted `.enc` file is decrypted with `--key` in the `--decrypt` mode, after every
//! chunk has authenticated (see `a3s_power::encrypted`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use picolm::GgufFile;
use power_attest::model_crypt::{StaticKeyProvider, TempPlaintext};

use a3s_power::encrypted::{self, DecryptionMode, OpenOptions};

#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// Model key file (hex, from `a3s-power keygen --kind model`) for an encrypted `.enc` model.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// How to decrypt an `.enc` model: `memory` (locked RAM), `streaming` (one layer at a
    /// time, implies --layer-streaming) or `file` (temporary plaintext file, wiped after).
    #[arg(long, default_value = "memory", value_parser = ["memory", "streaming", "file"])]
    pub decrypt: String,
}

impl DecryptArgs {
    pub fn mode(&self) -> DecryptionMode {
        match self.decrypt.as_str() {
            "streaming" => DecryptionMode::Streaming,
            "file" => DecryptionMode::File,
            _ => DecryptionMode::Memory,
        }
    }
}

/// A model file ready for picolm, with the temporary plaintext (file mode) it depends on.
#[derive(Debug)]
pub struct OpenedFile {
    pub file: Arc<GgufFile>,
    _temp: Option<TempPlaintext>,
}

pub fn open(path: &Path, d: &DecryptArgs) -> Result<OpenedFile> {
    let encrypted = a3s_power::store::detect_format(path)? == "gguf-encrypted";
    if !encrypted {
        if d.key.is_some() {
            bail!(
                "--key given but {} is not an encrypted model",
                path.display()
            );
        }
        return Ok(OpenedFile {
            file: Arc::new(GgufFile::open(path)?),
            _temp: None,
        });
    }
    let Some(key) = &d.key else {
        bail!("{} is an encrypted model: pass --key", path.display());
    };
    let keys = StaticKeyProvider::from_file(key)?;
    let o = OpenOptions {
        mode: d.mode(),
        pin: None,
        signing_key: None,
        tmp_dir: std::env::temp_dir(),
    };
    let m = encrypted::open_path(path, &keys, &o)
        .with_context(|| format!("decrypting {}", path.display()))?;
    Ok(OpenedFile {
        file: Arc::new(m.file),
        _temp: m.temp,
    })
}
