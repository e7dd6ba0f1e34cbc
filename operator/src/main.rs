//! `a3s-power-operator`: reconciles InferenceModels and AttestationPolicies (see the crate docs).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use power_operator::children::Defaults;
use power_operator::controller::{self, Health, Scope};
use power_operator::gate::OnlineAttestor;
use power_operator::leader::{self, LeaseConfig};
use power_operator::{Context, Settings};

/// A3S Power operator.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Watch only this namespace (namespaced mode); all namespaces when unset.
    #[arg(long, env = "WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Default runtime image for InferenceModels without spec.runtime.image.
    #[arg(
        long,
        env = "A3S_POWER_RUNTIME_IMAGE",
        default_value = "ghcr.io/a3s-lab/power:latest"
    )]
    runtime_image: String,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Pods attested at once per InferenceModel.
    #[arg(long, default_value_t = 8)]
    gate_concurrency: usize,
    /// Deadline of one attestation (handshake, fetch, verification).
    #[arg(long, default_value = "10", value_name = "SECONDS")]
    gate_timeout: u64,
    /// Leader election: off for a single replica run outside the cluster.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "a3s-power-system")]
    lease_namespace: String,
    #[arg(long, default_value = "a3s-power-operator")]
    lease_name: String,
    /// This replica's identity (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }

    // Kubeconfig outside the cluster, in-cluster config inside.
    let client = Client::try_default()
        .await
        .context("Kubernetes client configuration")?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("a3s-power-operator-{}", std::process::id()));
    let settings = Settings {
        defaults: Defaults {
            runtime_image: args.runtime_image.clone(),
        },
        gate_concurrency: args.gate_concurrency,
    };
    let attestor = Arc::new(OnlineAttestor {
        timeout: Duration::from_secs(args.gate_timeout),
    });
    let ctx = Arc::new(Context::new(
        client.clone(),
        attestor,
        settings,
        Some(identity.clone()),
    ));

    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    let app = controller::router(health.clone(), ctx.metrics.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .await
    });

    client
        .apiserver_version()
        .await
        .context("reaching the API server")?;
    health.ready.store(true, Ordering::Relaxed);

    let lease_api: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
    let lease_cfg = LeaseConfig {
        name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone(),
        identity: identity.clone(),
        duration: Duration::from_secs(15),
    };
    let signal = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
    };
    tokio::pin!(signal);

    if args.leader_elect {
        tokio::select! {
            r = leader::acquire(&lease_api, &lease_cfg) => r?,
            _ = &mut signal => { let _ = stop_tx.send(true); return Ok(()); }
        }
        tracing::info!(identity, "acquired the leader Lease");
    }
    let scope = match &args.watch_namespace {
        Some(ns) => Scope::Namespace(ns.clone()),
        None => Scope::All,
    };
    let controllers = controller::run(ctx.clone(), scope, stop_rx.clone());
    let lost = async {
        if args.leader_elect {
            leader::hold(lease_api.clone(), lease_cfg.clone()).await
        } else {
            std::future::pending().await
        }
    };
    let mut exit_err = None;
    tokio::pin!(controllers);
    tokio::select! {
        _ = &mut signal => tracing::info!("shutting down"),
        e = lost => { tracing::error!(error = %e, "leadership lost"); exit_err = Some(e); }
        _ = &mut controllers => tracing::warn!("controllers stopped"),
    }
    let _ = stop_tx.send(true);
    // Let in-flight reconciles finish (graceful_shutdown_on), then give the Lease up.
    let _ = tokio::time::timeout(Duration::from_secs(20), &mut controllers).await;
    if args.leader_elect
        && exit_err.is_none()
        && let Err(e) = leader::release(&lease_api, &lease_cfg).await
    {
        tracing::warn!(error = %e, "releasing the Lease");
    }
    let _ = http.await;
    match exit_err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
