//! `AttestationPolicy` (namespaced): the reference values a pod's attestation must match before
//! it may receive Service traffic (DESIGN §4.2).
//!
//! The spec mirrors [`power_attest::Policy`] field for field (same camelCase names) and adds the
//! schema and CEL rules the API server enforces; [`AttestationPolicySpec::to_policy`] converts it
//! for verification. The mirror keeps `power-attest` free of Kubernetes and schema concerns; a
//! test round-trips a fully populated `Policy` through this spec so the two cannot drift apart.

// kube's `printcolumn(...)` repeats `type_ =`, which clippy takes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validated::{ChipId, GoDuration, Measurement, ModelDigest};

/// Whether a failed attestation keeps a pod out of the Service (`Enforce`) or is only reported
/// with a Warning Event while the pod is admitted (`Audit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Enforcement {
    #[default]
    Enforce,
    Audit,
}

/// An AttestationPolicy pins the reference values (launch measurements, minimum TCB, guest policy)
/// that a runtime pod's hardware attestation must match before the pod receives traffic.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "power.a3s.dev",
    version = "v1alpha1",
    kind = "AttestationPolicy",
    plural = "attestationpolicies",
    singular = "attestationpolicy",
    namespaced,
    status = "AttestationPolicyStatus",
    shortname = "attpol",
    category = "a3s",
    doc = "Reference values a runtime pod's hardware attestation must match before it receives Service traffic.",
    printcolumn(
        name = "Enforcement",
        type_ = "string",
        json_path = ".spec.enforcement"
    ),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    ),
    printcolumn(name = "Models", type_ = "integer", json_path = ".status.boundModels"),
    printcolumn(
        name = "Verified",
        type_ = "integer",
        json_path = ".status.pods.verified"
    ),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.pods.failed"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Digest",
        type_ = "string",
        json_path = ".status.policyDigest",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.enforcement != 'Audit' || size(self.referenceValueSets) > 0").message("Audit mode needs at least one reference value set to report against").field_path(".referenceValueSets"),
    validation = Rule::new("self.allowSimulated || !self.referenceValueSets.exists(s, has(s.simulated))").message("must be true when a reference value set has simulated values").field_path(".allowSimulated")
)]
pub struct AttestationPolicySpec {
    /// Enforce (default): a pod that fails attestation never receives traffic. Audit: it is
    /// admitted and every failure is recorded as a Warning Event.
    #[serde(default)]
    pub enforcement: Enforcement,
    /// Accept simulated evidence (development and CI only). Default false.
    #[serde(default)]
    pub allow_simulated: bool,
    /// A pod passes if its evidence matches any one of these sets completely.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub reference_value_sets: Vec<ReferenceValueSet>,
    /// How often pods are re-attested and how old evidence may be.
    #[serde(default)]
    pub freshness: Freshness,
    /// Where certificates and collateral are fetched when the evidence does not carry them.
    #[serde(default)]
    pub collateral: CollateralSources,
    /// Measurements and model digests that are refused whatever the reference values say.
    #[serde(default)]
    pub deny_list: DenyList,
}

/// One complete set of reference values; only the section for the evidence's TEE is used.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.snp) || has(self.tdx) || has(self.simulated)").message("a reference value set needs snp, tdx or simulated values"))]
pub struct ReferenceValueSet {
    /// Name shown in verdicts and Events; defaults to the set's index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub name: Option<String>,
    /// AMD SEV-SNP reference values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snp: Option<SnpReferenceValues>,
    /// Intel TDX reference values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tdx: Option<TdxReferenceValues>,
    /// Simulated evidence (needs allowSimulated: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated: Option<SimulatedReferenceValues>,
}

/// SEV-SNP reference values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnpReferenceValues {
    /// Allowed launch MEASUREMENTs (SHA-384, 96 hex characters each).
    #[schemars(length(min = 1, max = 64))]
    pub measurements: Vec<Measurement>,
    /// Minimum security patch levels for COMMITTED_TCB and LAUNCH_TCB.
    #[serde(
        default,
        rename = "minimumTCB",
        skip_serializing_if = "Option::is_none"
    )]
    pub minimum_tcb: Option<MinimumTcb>,
    /// What the guest policy may allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_policy: Option<GuestPolicyRequirements>,
    /// Required VMPL of the requester (0-3); 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3))]
    pub vmpl: Option<u32>,
    /// Allowed CHIP_IDs (128 hex characters); empty allows any chip.
    #[serde(default, rename = "chipIDs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub chip_ids: Vec<ChipId>,
}

/// Minimum SPL values; each component of COMMITTED_TCB and LAUNCH_TCB must be at least this.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MinimumTcb {
    #[serde(default)]
    pub bootloader: u8,
    #[serde(default)]
    pub tee: u8,
    #[serde(default)]
    pub snp: u8,
    #[serde(default)]
    pub microcode: u8,
    /// Firmware (Turin and later only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
}

/// Guest policy bits a pod may have set. `debug: true` permits a debug guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestPolicyRequirements {
    #[serde(default)]
    pub debug: bool,
    #[serde(default, rename = "migrateMA")]
    pub migrate_ma: bool,
}

/// Intel TDX TCB statuses from Intel's collateral.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(clippy::enum_variant_names)]
pub enum TcbStatus {
    UpToDate,
    SWHardeningNeeded,
    ConfigurationNeeded,
    ConfigurationAndSWHardeningNeeded,
    OutOfDate,
    OutOfDateConfigurationNeeded,
    Revoked,
}

/// Intel TDX reference values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TdxReferenceValues {
    /// Allowed MRTD values (96 hex characters each).
    #[schemars(length(min = 1, max = 64))]
    pub mr_td: Vec<Measurement>,
    /// Allowed values per RTMR; an empty list accepts any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr: Option<RtmrReferenceValues>,
    /// TD attribute requirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub td_attributes: Option<TdAttributesRequirements>,
    /// Allowed MRSERVICETD values (TD 1.5); empty: it must be all zero.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub mr_service_td: Vec<Measurement>,
    /// Accepted TCB statuses; only UpToDate when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub accepted_tcb_status: Vec<TcbStatus>,
}

/// Allowed values per runtime measurement register.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RtmrReferenceValues {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub rtmr0: Vec<Measurement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub rtmr1: Vec<Measurement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub rtmr2: Vec<Measurement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub rtmr3: Vec<Measurement>,
}

/// `debug: true` permits a debug TD (default false); `septVeDisable: true` (default) requires
/// SEPT_VE_DISABLE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TdAttributesRequirements {
    #[serde(default)]
    pub debug: bool,
    #[serde(default = "yes")]
    pub sept_ve_disable: bool,
}

fn yes() -> bool {
    true
}

/// Simulated evidence: the SEV-SNP layout under a development trust root.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SimulatedReferenceValues {
    /// Allowed simulated measurements (96 hex characters each).
    #[schemars(length(min = 1, max = 64))]
    pub measurements: Vec<Measurement>,
}

/// Re-attestation and evidence age.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Freshness {
    /// How often each pod is attested again, e.g. 5m.
    #[serde(default = "default_reattest")]
    pub reattest_interval: GoDuration,
    /// The longest time between issuing a nonce and verifying the evidence, e.g. 2m.
    #[serde(default = "default_max_age")]
    pub max_evidence_age: GoDuration,
}

fn default_reattest() -> GoDuration {
    GoDuration("5m".into())
}
fn default_max_age() -> GoDuration {
    GoDuration("2m".into())
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            reattest_interval: default_reattest(),
            max_evidence_age: default_max_age(),
        }
    }
}

/// Collateral endpoints (AMD KDS, Intel PCS).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CollateralSources {
    /// AMD Key Distribution Service base URL.
    #[serde(default, rename = "amdKdsURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub amd_kds_url: Option<String>,
    /// Intel Provisioning Certification Service base URL.
    #[serde(
        default,
        rename = "intelPcsURL",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = 2048))]
    pub intel_pcs_url: Option<String>,
}

/// Values refused whatever the reference value sets allow.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DenyList {
    /// Denied launch measurements (96 hex characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub measurements: Vec<Measurement>,
    /// Denied model digests (64 lowercase hex characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub model_sha256: Vec<ModelDigest>,
}

/// Observed state of an AttestationPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttestationPolicyStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid`: the policy parsed and passed the verifier's own checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// SHA-256 of the canonical JSON of the spec as the verifier sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_digest: Option<String>,
    /// How many InferenceModels reference this policy.
    #[serde(default)]
    pub bound_models: i32,
    /// Pods of those models by their last attestation result.
    #[serde(default)]
    pub pods: PodAttestationCounts,
}

/// Pods by their last attestation result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PodAttestationCounts {
    pub verified: i32,
    pub failed: i32,
}

/// The conversion to the verifier's policy failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("AttestationPolicy spec does not convert to a verifier policy: {0}")]
    Convert(#[from] serde_json::Error),
    #[error(transparent)]
    Invalid(#[from] power_attest::Error),
}

impl AttestationPolicySpec {
    /// The verifier's policy, validated by `power-attest` (which names the field on error).
    pub fn to_policy(&self) -> Result<power_attest::Policy, PolicyError> {
        let policy: power_attest::Policy = serde_json::from_value(serde_json::to_value(self)?)?;
        policy.validate()?;
        Ok(policy)
    }

    /// The TEE kinds this policy can admit (sections present in its reference value sets).
    pub fn tee_kinds(&self) -> Vec<power_attest::TeeKind> {
        use power_attest::TeeKind;
        let mut kinds = Vec::new();
        for (present, kind) in self.reference_value_sets.iter().flat_map(|s| {
            [
                (s.snp.is_some(), TeeKind::SevSnp),
                (s.tdx.is_some(), TeeKind::Tdx),
                (s.simulated.is_some(), TeeKind::Simulated),
            ]
        }) {
            if present && !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        kinds
    }
}
