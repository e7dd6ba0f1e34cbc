//! The attestation gate. For each running, container-ready runtime pod: a fresh 32-byte nonce and
//! `GET /v1/attestation` over TLS to the pod's RA-TLS port, where the evidence must bind that
//! nonce and the SPKI of the certificate on that same connection (`power_attest::online`), then
//! verification against the policy and the model digest the pod was created for. The verdict is
//! written as the pod condition `power.a3s.dev/attested` (server-side apply on `pods/status`
//! under its own field manager); the pod's readiness gate makes the EndpointSlice follow it.
//!
//! Results are remembered per pod UID so a pod is re-attested every `reattestInterval`, at once
//! when the policy's generation changes or its containers restart, and never admitted without
//! a verification of its own (the memory is empty after an operator restart, so every pod is
//! attested again). A pod whose containers stop being ready loses its condition at once and is
//! forgotten, so it rejoins the Service only after a fresh verification: a verdict belongs to
//! the container processes that produced the evidence, not to the pod object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use power_attest::{Policy, TeeKind, Verdict};
use power_crds::names::{ATTESTED_CONDITION, MODEL_DIGEST_ANNOTATION};

use crate::conditions::truncate;
use crate::error::{Error, Result};
use crate::runtime_config::RA_TLS_PORT;

/// Field manager for pod conditions (separate from the children's manager).
pub const GATE_MANAGER: &str = "a3s-power-operator-gate";

/// What to attest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pod: String,
    /// `https://<podIP>:<RA-TLS port>`.
    pub url: String,
    pub served_name: String,
    pub model_sha256: [u8; 32],
}

/// The outcome of one attestation attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The evidence was fetched and verified (the verdict may still fail).
    Verdict(Box<Verdict>),
    /// No verdict: connection, TLS handshake, HTTP or timeout. The message names no secret.
    Unreachable(String),
}

/// Performs attestations; the real one talks RA-TLS, tests use a fake.
pub trait Attestor: Send + Sync + 'static {
    fn attest(
        &self,
        target: Target,
        policy: Policy,
    ) -> futures::future::BoxFuture<'static, Outcome>;
}

/// `power_attest::online::attest_url` on a blocking thread, with a deadline.
#[derive(Debug, Clone)]
pub struct OnlineAttestor {
    pub timeout: Duration,
}

impl Attestor for OnlineAttestor {
    fn attest(&self, t: Target, policy: Policy) -> futures::future::BoxFuture<'static, Outcome> {
        let timeout = self.timeout;
        Box::pin(async move {
            let url = t.url.clone();
            let job = tokio::task::spawn_blocking(move || {
                power_attest::online::attest_url(
                    &t.url,
                    &policy,
                    Some(&t.served_name),
                    Some(t.model_sha256),
                    None,
                )
            });
            match tokio::time::timeout(timeout, job).await {
                Err(_) => Outcome::Unreachable(format!("{url}: no answer within {timeout:?}")),
                Ok(Err(e)) => Outcome::Unreachable(format!("attestation task failed: {e}")),
                // The certificate's evidence failed verification during the handshake: that is
                // a verdict (e.g. MeasurementMismatch), not an unreachable pod.
                Ok(Ok(Err(power_attest::Error::Refused { verdict, .. }))) => {
                    Outcome::Verdict(verdict)
                }
                Ok(Ok(Err(e))) => Outcome::Unreachable(e.to_string()),
                // The fresh-nonce verdict is what binds this connection; the handshake verdict
                // (certificate evidence) must also have been accepted for the connection to exist.
                Ok(Ok(Ok(a))) => Outcome::Verdict(Box::new(a.fresh)),
            }
        })
    }
}

/// The gate's decision for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Admit to the Service (condition True).
    pub admit: bool,
    /// The verification passed (false in Audit mode admits).
    pub passed: bool,
    pub reason: String,
    pub message: String,
    pub tee: Option<TeeKind>,
    /// The evidence bound a different model digest.
    pub model_mismatch: bool,
}

impl Decision {
    pub fn from_outcome(o: &Outcome) -> Decision {
        match o {
            Outcome::Verdict(v) => Decision {
                admit: v.accepted,
                passed: v.passed,
                reason: v.reason().to_string(),
                message: truncate(&v.message(), 512),
                tee: v.tee,
                model_mismatch: v.reason() == "ModelDigestMismatch",
            },
            Outcome::Unreachable(m) => Decision {
                admit: false,
                passed: false,
                reason: "AttestationUnreachable".into(),
                message: truncate(m, 512),
                tee: None,
                model_mismatch: false,
            },
        }
    }
}

/// What the gate remembers about a pod.
#[derive(Debug, Clone)]
pub struct PodRecord {
    pub at: Instant,
    pub wall: k8s_openapi::jiff::Timestamp,
    pub policy_generation: Option<i64>,
    pub policy: String,
    pub decision: Decision,
    /// The containers the verdict was for ([`instance_of`] when the attestation started).
    pub instance: Option<String>,
}

/// Results per pod UID, shared by the reconcilers.
#[derive(Debug, Default, Clone)]
pub struct GateState {
    inner: Arc<Mutex<HashMap<String, PodRecord>>>,
}

impl GateState {
    pub fn get(&self, uid: &str) -> Option<PodRecord> {
        self.inner.lock().ok().and_then(|m| m.get(uid).cloned())
    }
    pub fn put(&self, uid: &str, r: PodRecord) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(uid.to_string(), r);
        }
    }
    /// Forget one pod (it is due at once when next seen).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.remove(uid);
        }
    }
    /// Forget pods that no longer exist.
    pub fn retain(&self, live: &dyn Fn(&str) -> bool) {
        if let Ok(mut m) = self.inner.lock() {
            m.retain(|k, _| live(k));
        }
    }
    /// (verified, failed) over the pods of a policy.
    pub fn counts_for_policy(&self, ns_policy: &str) -> (i32, i32) {
        let Ok(m) = self.inner.lock() else {
            return (0, 0);
        };
        m.values()
            .filter(|r| r.policy == ns_policy)
            .fold((0, 0), |(v, f), r| {
                if r.decision.passed {
                    (v + 1, f)
                } else {
                    (v, f + 1)
                }
            })
    }
}

/// A pod the gate may attest: Running, with an IP, containers ready, not terminating.
pub fn target_of(pod: &Pod, served_name: &str) -> Option<Target> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ip = status.pod_ip.as_deref()?;
    let containers_ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "ContainersReady" && c.status == "True");
    if !containers_ready {
        return None;
    }
    let digest = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MODEL_DIGEST_ANNOTATION))?;
    let mut model_sha256 = [0u8; 32];
    hex::decode_to_slice(digest, &mut model_sha256).ok()?;
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    Some(Target {
        pod: pod.metadata.name.clone()?,
        url: format!("https://{host}:{RA_TLS_PORT}"),
        served_name: served_name.to_string(),
        model_sha256,
    })
}

/// The identity of a pod's running containers: each one's name, restart count and container
/// ID. It changes whenever a container is restarted or replaced.
pub fn instance_of(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let ids: Vec<String> = statuses
        .iter()
        .map(|c| {
            format!(
                "{}:{}:{}",
                c.name,
                c.restart_count,
                c.container_id.as_deref().unwrap_or_default()
            )
        })
        .collect();
    Some(ids.join(","))
}

/// Whether a pod is due: never attested, policy changed, its containers changed since the
/// verdict ([`instance_of`]), or the interval has passed.
pub fn due(
    record: Option<&PodRecord>,
    policy_generation: Option<i64>,
    interval: Duration,
    now: Instant,
    instance: Option<&str>,
) -> bool {
    match record {
        None => true,
        Some(r) => {
            r.policy_generation != policy_generation
                || r.instance.as_deref() != instance
                || now.saturating_duration_since(r.at) >= interval
                // Unreachable pods are retried soon rather than after a full interval.
                || (r.decision.reason == "AttestationUnreachable"
                    && now.saturating_duration_since(r.at) >= Duration::from_secs(5))
        }
    }
}

/// The pod's current gate condition (status, reason, message), if any.
pub fn current_condition(pod: &Pod) -> Option<(String, String, String)> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == ATTESTED_CONDITION)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// Write the gate condition when it differs from what the pod has. Returns whether the
/// condition's status flipped (or was set for the first time).
pub async fn write_condition(pods: &Api<Pod>, pod: &Pod, d: &Decision) -> Result<bool> {
    let name = pod
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))?;
    let status = if d.admit { "True" } else { "False" };
    let current = current_condition(pod);
    if let Some((s, r, m)) = &current
        && s == status
        && *r == d.reason
        && *m == d.message
    {
        return Ok(false);
    }
    let flipped = current.as_ref().is_none_or(|(s, _, _)| s != status);
    let last_transition = match (&current, flipped) {
        (Some(_), false) => pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == ATTESTED_CONDITION))
            .and_then(|c| c.last_transition_time.clone()),
        _ => None,
    }
    .unwrap_or_else(|| {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
    });
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "status": { "conditions": [{
            "type": ATTESTED_CONDITION,
            "status": status,
            "reason": d.reason,
            "message": d.message,
            "lastTransitionTime": last_transition,
        }]},
    });
    pods.patch_status(
        name,
        &PatchParams::apply(GATE_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(flipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{DIGEST, PodExt, pod};

    #[test]
    fn only_ready_running_pods_are_targets() {
        let t = target_of(&pod("chat-1", "10.244.1.5").ready(), "tiny").expect("target");
        assert_eq!(t.url, "https://10.244.1.5:11443");
        assert_eq!(hex::encode(t.model_sha256), DIGEST);
        assert!(
            target_of(&pod("chat-1", "10.244.1.5"), "tiny").is_none(),
            "containers not ready"
        );
        assert!(target_of(&pod("chat-1", "10.244.1.5").ready().terminating(), "tiny").is_none());
    }

    #[test]
    fn instance_changes_with_a_restart() {
        let p = pod("chat-1", "10.244.1.5").ready();
        assert_eq!(instance_of(&p), None, "no container status yet");
        let a = instance_of(&p.clone().container("runtime", 0, "process://7"));
        assert_eq!(a.as_deref(), Some("runtime:0:process://7"));
        assert_ne!(
            a,
            instance_of(&p.clone().container("runtime", 1, "process://7"))
        );
        assert_ne!(a, instance_of(&p.container("runtime", 0, "process://9")));
    }

    #[test]
    fn due_after_interval_policy_change_or_restart() {
        let now = Instant::now();
        let rec = PodRecord {
            at: now,
            wall: k8s_openapi::jiff::Timestamp::now(),
            policy_generation: Some(1),
            policy: "ns/p".into(),
            decision: Decision {
                admit: true,
                passed: true,
                reason: "AttestationSucceeded".into(),
                message: String::new(),
                tee: None,
                model_mismatch: false,
            },
            instance: Some("runtime:0:process://7".into()),
        };
        let i = Duration::from_secs(300);
        let same = Some("runtime:0:process://7");
        assert!(due(None, Some(1), i, now, same));
        assert!(!due(
            Some(&rec),
            Some(1),
            i,
            now + Duration::from_secs(10),
            same
        ));
        assert!(
            due(Some(&rec), Some(2), i, now, same),
            "policy generation changed"
        );
        assert!(
            due(Some(&rec), Some(1), i, now + i, same),
            "interval passed"
        );
        assert!(
            due(Some(&rec), Some(1), i, now, Some("runtime:1:process://8")),
            "container restarted"
        );
    }
}
