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
    /// Check the configuration (file, environment, flags) and exit: 0 and a summary when it is
    /// valid, 1 and the file, line, key and reason when it is not. Touches no model or store.
    #[arg(long)]
    pub check: bool,
}

/// What `serve --check` prints for a valid configuration.
fn summary(cfg: &Config, source: &str) -> String {
    let mut s = format!(
        "configuration OK: {source}\n  listen: {}:{}\n  data_dir: {}\n  models: {}\n  \
         tee_mode: {}, redact_logs: {}, pinned models: {}, signing key: {}\n",
        cfg.host,
        cfg.port,
        cfg.data_dir.display(),
        cfg.models.len(),
        cfg.tee_mode,
        cfg.redact_logs || cfg.tee_mode,
        cfg.model_hashes.len(),
        if cfg.model_signing_key.is_some() {
            "set"
        } else {
            "none"
        },
    );
    if let Some(p) = cfg.tls_port {
        s.push_str(&format!(
            "  tls_port: {p}{}\n",
            if cfg.ra_tls { " (RA-TLS)" } else { "" }
        ));
    }
    s
}

/// SIGTERM and SIGINT (Ctrl-C), registered once at start so that no signal is missed between
/// the first one (graceful shutdown) and a second one (stop waiting).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! { _ = self.term.recv() => {}, _ = self.int.recv() => {} }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn run(a: ServeArgs) -> Result<()> {
    let mut cfg = Config::load(a.config.as_deref())?;
    if let Some(h) = a.host {
        cfg.host = h;
    }
    if let Some(p) = a.port {
        cfg.port = p;
    }
    if a.check {
        let default = a3s_power::config::default_config_path();
        let source = match &a.config {
            Some(p) => p.display().to_string(),
            None if default.is_file() => default.display().to_string(),
            None => "(built-in defaults)".to_string(),
        };
        print!("{}", summary(&cfg, &source));
        return Ok(());
    }
    let grace = cfg.shutdown_timeout;
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
    if let Some(p) = cfg.vsock_port {
        tracing::warn!(
            port = p,
            "vsock_port is set, but this build has no vsock transport: ignored"
        );
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
        let mut signals = Signals::new()?;
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
        let mut serving = tokio::spawn(server::serve(listener, app, async move {
            let _ = rx.changed().await;
        }));
        signals.recv().await;
        // New connections are refused from here on; in-flight requests get `shutdown_timeout`
        // to finish (a second signal cuts it short), then open streams are ended cleanly.
        tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down");
        let _ = stop_tx.send(true);
        let finished = tokio::select! {
            _ = &mut serving => true,
            _ = tokio::time::sleep(grace) => false,
            _ = signals.recv() => false,
        };
        if !finished {
            tracing::warn!("shutdown grace period over: ending open streams");
            let _ = state.stop_streams.send(true);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut serving).await;
        }
        server::finish(&state).await;
        eprintln!("a3s-power: stopped");
        Ok::<_, anyhow::Error>(())
    })
}
