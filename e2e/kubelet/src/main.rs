//! `power-e2e-kubelet`: runs the pods bound to fake TEE nodes as local processes.
//! Started by `e2e/cluster.sh` inside the test's private network namespace.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use power_e2e_kubelet::config::{ImageArg, ImageTable, KubeletConfig, NodeArg};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A fake node, NAME=TEE with TEE one of sev-snp, tdx, none (repeatable).
    #[arg(long = "node", required = true)]
    nodes: Vec<NodeArg>,
    /// An image and the executable that plays its entrypoint, IMAGE=PATH (repeatable). IMAGE
    /// without a tag matches every tag.
    #[arg(long = "image")]
    images: Vec<ImageArg>,
    /// Folder for pod volumes and container logs.
    #[arg(long)]
    run_dir: PathBuf,
    /// The pods' gateway: an address on the test namespace's loopback device.
    #[arg(long, default_value = "10.245.0.1")]
    gateway: Ipv4Addr,
    /// First container restart back-off in milliseconds (doubled per restart).
    #[arg(long, default_value_t = 1000)]
    backoff_base_ms: u64,
    /// Longest container restart back-off in seconds.
    #[arg(long, default_value_t = 20)]
    backoff_max_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the API server (KUBECONFIG)")?;
    let cfg = KubeletConfig {
        run_dir: std::path::absolute(&args.run_dir)?,
        images: ImageTable::new(args.images),
        gateway: args.gateway,
        backoff_base: Duration::from_millis(args.backoff_base_ms),
        backoff_max: Duration::from_secs(args.backoff_max_secs),
        kubernetes_service: None,
    };
    let mut term = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    power_e2e_kubelet::kubelet::run(client, args.nodes, cfg, shutdown).await
}
