//! The AttestationPolicy reconciler: `Valid` (the verifier accepts the policy), `policyDigest`,
//! how many InferenceModels reference it, and their pods by last attestation result. The
//! InferenceModels referencing a policy are re-queued by the InferenceModel controller's own
//! watch on policies; this reconciler only reports.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use power_crds::attestation_policy::PodAttestationCounts;
use power_crds::condition::VALID;
use power_crds::{AttestationPolicy, AttestationPolicyStatus, InferenceModel};
use sha2::{Digest, Sha256};

use crate::children::MANAGER;
use crate::conditions::{Desired, merge};
use crate::context::Context;
use crate::error::{Error, Result};

/// SHA-256 of the canonical JSON of the verifier's view of the policy.
pub fn policy_digest(p: &power_attest::Policy) -> Result<String> {
    let json = serde_json::to_vec(p).map_err(|source| Error::Serialize {
        what: "policy",
        source,
    })?;
    Ok(hex::encode(Sha256::digest(json)))
}

/// Reconcile one AttestationPolicy.
pub async fn reconcile(pol: Arc<AttestationPolicy>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics
        .reconciliations
        .with_label_values(&["AttestationPolicy"])
        .inc();
    let ns = pol
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = pol.name_any();
    let (valid, digest) = match pol.spec.to_policy() {
        Ok(p) => (
            Desired::new(
                VALID,
                true,
                "PolicyValid",
                format!("{} reference value sets", p.reference_value_sets.len()),
            ),
            Some(policy_digest(&p)?),
        ),
        Err(e) => (
            Desired::new(VALID, false, "PolicyInvalid", e.to_string()),
            None,
        ),
    };
    let models: Api<InferenceModel> = Api::namespaced(ctx.client.clone(), &ns);
    let bound = models
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|m| {
            m.spec.attestation_policy_ref.name == name && m.metadata.deletion_timestamp.is_none()
        })
        .count() as i32;
    let (verified, failed) = ctx.gate.counts_for_policy(&format!("{ns}/{name}"));
    let old = pol.status.clone().unwrap_or_default();
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let status = AttestationPolicyStatus {
        observed_generation: pol.metadata.generation,
        conditions: merge(&old.conditions, &[valid], pol.metadata.generation, &now),
        policy_digest: digest,
        bound_models: bound,
        pods: PodAttestationCounts { verified, failed },
    };
    if status != old {
        let api: Api<AttestationPolicy> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({
            "apiVersion": "power.a3s.dev/v1alpha1",
            "kind": "AttestationPolicy",
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    // Pod counts come from the gate's memory, which no watch event announces.
    Ok(Action::requeue(Duration::from_secs(30)))
}

pub fn error_policy(_p: Arc<AttestationPolicy>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "AttestationPolicy reconcile failed");
    ctx.metrics
        .reconcile_errors
        .with_label_values(&["AttestationPolicy", err.metric_label()])
        .inc();
    Action::requeue(Duration::from_secs(15))
}
