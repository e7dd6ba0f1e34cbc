//! `a3s-power list` and `a3s-power pull`: the model store from the command line.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use a3s_power::config::Config;
use a3s_power::metrics::Metrics;
use a3s_power::pull::{PullEvent, PullRegistry, PullRequest, hf_endpoint};
use a3s_power::store::Store;

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub fn list(a: ListArgs) -> Result<()> {
    let cfg = Config::load(a.config.as_deref())?;
    let store = Store::open(cfg.models_dir())?;
    println!("{:<48} {:<14} {:>12}  SHA256", "NAME", "FORMAT", "SIZE");
    for m in store.list()? {
        println!(
            "{:<48} {:<14} {:>12}  {}",
            m.name, m.format, m.size, &m.sha256
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// `owner/repo:QUANT`, `owner/repo/file.gguf`, or a name with --url.
    pub name: String,
    #[arg(long)]
    pub url: Option<String>,
    /// Expected SHA-256 (hex or sha256:hex).
    #[arg(long)]
    pub sha256: Option<String>,
    #[arg(long)]
    pub force: bool,
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub fn pull(a: PullArgs) -> Result<()> {
    let cfg = Config::load(a.config.as_deref())?;
    let pin = match a
        .sha256
        .as_deref()
        .or(cfg.model_hashes.get(&a.name).map(String::as_str))
    {
        Some(p) => Some(a3s_power::config::normalize_digest(p).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let store = Store::open(cfg.models_dir())?;
        let reg = PullRegistry::new(store, Metrics::new());
        let mut rx = reg.start(PullRequest {
            name: a.name.clone(),
            url: a.url,
            pin,
            token: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()),
            force: a.force,
            hf_endpoint: hf_endpoint(),
            signature: None,
            signing_key: None,
        })?;
        loop {
            match rx.recv().await {
                Ok(PullEvent::Success { id, sha256, .. }) => {
                    eprintln!();
                    println!("{id} sha256:{sha256}");
                    return Ok(());
                }
                Ok(PullEvent::Error { error }) => {
                    eprintln!();
                    bail!("pull failed: {error}");
                }
                Ok(PullEvent::Downloading { completed, total }) => {
                    eprint!(
                        "\r{completed} / {} bytes",
                        total.map_or("?".into(), |t| t.to_string())
                    );
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => bail!("pull ended without a result"),
            }
        }
    })
}
