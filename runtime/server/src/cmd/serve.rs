//! `a3s-power serve`: the OpenAI-compatible server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tracing_subscriber::EnvFilter;

use a3s_power::config::Config;
use a3s_power::metrics::Metrics;
use a3s_power::privacy::RedactingWriter;
use a3s_power::{api, server};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HCL configuration file (default: $A3S_POWER_HOME/config.hcl or ~/.a3s/power/config.hcl).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Override `host`.
    #[arg(long)]
    pub host: Option<String>,
    /// Override `port` (0 picks a free port; the chosen address is printed).
    #[arg(long)]
    pub port: Option<u16>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

pub fn run(a: ServeArgs) -> Result<()> {
    let mut cfg = Config::load(a.config.as_deref())?;
    if let Some(h) = a.host {
        cfg.host = h;
    }
    if let Some(p) = a.port {
        cfg.port = p;
    }
    let metrics = Metrics::new();
    let writer = RedactingWriter {
        enabled: cfg.redact_logs || cfg.tee_mode,
        redactions: metrics.log_redactions.clone(),
    };
    let filter =
        EnvFilter::try_from_env("A3S_POWER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let sub = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    if a.log_json {
        sub.json().init();
    } else {
        sub.init();
    }
    if let Some(t) = cfg.num_thread {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("starting the worker threads")?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let tls = cfg.tls_port.map(|p| (p, cfg.ra_tls));
        let host = cfg.host.clone();
        let port = cfg.port;
        let state = server::build_state(cfg, metrics)?;
        let app = api::router(state.clone());
        let addr: SocketAddr = format!("{host}:{port}")
            .parse()
            .or_else(|_| format!("[{host}]:{port}").parse())
            .with_context(|| format!("bad listen address {host}:{port}"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        tracing::info!(addr = %local, "a3s-power listening");
        eprintln!("a3s-power: listening on http://{local}");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if let Some((tp, ra)) = tls {
            let l = tokio::net::TcpListener::bind((host.as_str(), tp))
                .await
                .with_context(|| format!("binding TLS port {tp}"))?;
            eprintln!(
                "a3s-power: listening on https://{} ({})",
                l.local_addr()?,
                if ra { "RA-TLS" } else { "TLS" }
            );
            let mut rx = stop_rx.clone();
            let st = state.clone();
            let app = app.clone();
            tokio::spawn(async move {
                if let Err(e) = server::serve_tls(l, app, st, ra, async move {
                    let _ = rx.changed().await;
                })
                .await
                {
                    tracing::error!(error = %e, "TLS listener failed");
                }
            });
        }
        server::spawn_reaper(state.clone());
        let mut rx = stop_rx.clone();
        let serving = tokio::spawn(server::serve(listener, app, async move {
            let _ = rx.changed().await;
        }));
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        // In-flight requests get a bounded time to finish.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(20), serving).await;
        server::finish(&state).await;
        eprintln!("a3s-power: stopped");
        Ok::<_, anyhow::Error>(())
    })
}
