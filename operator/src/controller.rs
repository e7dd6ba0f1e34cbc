//! Wiring: the two controllers with their watches, and the health/metrics HTTP server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use power_crds::names::MODEL_LABEL;
use power_crds::{AttestationPolicy, InferenceModel};

use crate::context::Context;
use crate::{attestation_policy, inference_model};

/// Which namespaces the operator watches.
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    Namespace(String),
}

fn api<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match scope {
        Scope::All => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// Runs both controllers until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, scope: Scope, stop: tokio::sync::watch::Receiver<bool>) {
    let shutdown = move || {
        let mut rx = stop.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let client = ctx.client.clone();
    let managed =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=a3s-power-operator");

    let models = Controller::new(
        api::<InferenceModel>(&client, &scope),
        watcher::Config::default(),
    );
    let store = models.store();
    let models = models
        .owns(api::<Deployment>(&client, &scope), managed.clone())
        .owns(api::<Service>(&client, &scope), managed.clone())
        .owns(api::<ConfigMap>(&client, &scope), managed.clone())
        .watches(api::<Pod>(&client, &scope), managed.clone(), |pod: Pod| {
            let ns = pod.namespace()?;
            let name = pod.labels().get(MODEL_LABEL)?.clone();
            Some(ObjectRef::<InferenceModel>::new(&name).within(&ns))
        })
        .watches(
            api::<EndpointSlice>(&client, &scope),
            managed.clone(),
            |s: EndpointSlice| {
                let ns = s.namespace()?;
                let name = s.labels().get("kubernetes.io/service-name")?.clone();
                Some(ObjectRef::<InferenceModel>::new(&name).within(&ns))
            },
        )
        // A policy change re-queues the models that reference it (the gate re-attests at once
        // when the policy's generation differs from the one a pod was verified under).
        .watches(
            api::<AttestationPolicy>(&client, &scope),
            watcher::Config::default(),
            move |p: AttestationPolicy| {
                let ns = p.namespace().unwrap_or_default();
                let name = p.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|m| {
                        m.namespace().as_deref() == Some(ns.as_str())
                            && m.spec.attestation_policy_ref.name == name
                    })
                    .map(|m| ObjectRef::from_obj(&*m))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown())
        .run(
            inference_model::reconcile,
            inference_model::error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "InferenceModel controller");
            }
        });

    let policies = Controller::new(
        api::<AttestationPolicy>(&client, &scope),
        watcher::Config::default(),
    )
    .watches(
        api::<InferenceModel>(&client, &scope),
        watcher::Config::default(),
        |m: InferenceModel| {
            let ns = m.namespace()?;
            Some(
                ObjectRef::<AttestationPolicy>::new(&m.spec.attestation_policy_ref.name)
                    .within(&ns),
            )
        },
    )
    .graceful_shutdown_on(shutdown())
    .run(
        attestation_policy::reconcile,
        attestation_policy::error_policy,
        ctx,
    )
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "AttestationPolicy controller");
        }
    });
    futures::join!(models, policies);
}

/// State of the health endpoints.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Set once the process can talk to the API server (leader or standby).
    pub ready: Arc<AtomicBool>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(
    State((h, _)): State<(Health, crate::metrics::Metrics)>,
) -> (StatusCode, &'static str) {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State((_, m)): State<(Health, crate::metrics::Metrics)>) -> String {
    m.render()
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn router(health: Health, m: crate::metrics::Metrics) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state((health, m))
}
