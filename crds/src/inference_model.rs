//! `InferenceModel` (namespaced): one verified model served by attested runtime pods behind a
//! Service (DESIGN §4.1).

// kube's `printcolumn(...)` repeats `type_ =`, which clippy takes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validated::{Ed25519PublicKey, Ed25519Signature, ModelDigest};

/// An InferenceModel serves one model, pinned by its SHA-256, from runtime pods that receive
/// Service traffic only after their hardware attestation verified against an AttestationPolicy.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "power.a3s.dev",
    version = "v1alpha1",
    kind = "InferenceModel",
    plural = "inferencemodels",
    singular = "inferencemodel",
    namespaced,
    status = "InferenceModelStatus",
    shortname = "pim",
    category = "a3s",
    doc = "A model pinned by its SHA-256, served by runtime pods that receive traffic only after their attestation verified.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model.servedName"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(
        name = "Attested",
        type_ = "integer",
        json_path = ".status.attestedReplicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Digest",
        type_ = "string",
        json_path = ".spec.model.sha256",
        priority = 1
    ),
    printcolumn(
        name = "TEE",
        type_ = "string",
        json_path = ".status.attestation.teeType",
        priority = 1
    ),
    printcolumn(
        name = "Policy",
        type_ = "string",
        json_path = ".spec.attestationPolicyRef.name",
        priority = 1
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.url",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct InferenceModelSpec {
    /// The model: its served name, where it comes from and the digest it must have.
    pub model: ModelSpec,
    /// The AttestationPolicy (same namespace) every pod must satisfy before it receives traffic.
    pub attestation_policy_ref: PolicyReference,
    /// Number of runtime pods (the scale subresource's target). Default 1.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Rolling update limits; a model change rolls pods, old pods serve until new ones attest.
    #[serde(default)]
    pub rollout: Rollout,
    /// How the runtime pods run.
    #[serde(default)]
    pub runtime: RuntimeSpec,
    /// The Service in front of the attested pods.
    #[serde(default)]
    pub service: ServiceSpec,
}

fn default_replicas() -> i32 {
    1
}

/// The served model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// The name clients pass as `model` in OpenAI requests.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    )]
    pub served_name: String,
    /// Where the runtime fetches the model from: exactly one of url, pvc, huggingFace.
    pub source: ModelSource,
    /// SHA-256 of the plaintext GGUF file (64 lowercase hex). The runtime refuses any other
    /// file, and attestation binds this digest.
    pub sha256: ModelDigest,
    /// Optional Ed25519 seal of the digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ModelSignature>,
    /// Optional encryption: the model file is a chunked AES-256-GCM `.enc` file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<ModelEncryption>,
}

/// Where the model file comes from. Exactly one field is set.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.url), has(self.pvc), has(self.huggingFace)].filter(x, x).size() == 1").message("exactly one of url, pvc or huggingFace must be set"))]
pub struct ModelSource {
    /// An http(s) URL of the GGUF file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("must be an http:// or https:// URL"))]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
    /// A file in a PersistentVolumeClaim of the same namespace, mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcSource>,
    /// A file in a Hugging Face repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugging_face: Option<HuggingFaceSource>,
}

/// A model file in a PersistentVolumeClaim.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PvcSource {
    /// The claim's name.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Path of the GGUF file inside the volume, relative, without `..`.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.split('/').exists(p, p == '..')").message("must be a relative path without '..'"))]
    pub path: String,
}

/// A model file on the Hugging Face Hub.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HuggingFaceSource {
    /// `owner/name`.
    #[schemars(
        length(min = 3, max = 200),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
    )]
    pub repo: String,
    /// The GGUF file name in the repository.
    #[schemars(length(min = 1, max = 512))]
    pub file: String,
    /// Branch, tag or commit; default `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub revision: Option<String>,
    /// A token for gated or private repositories: one key of a Secret in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyReference>,
}

/// Ed25519 seal: a signature over `"a3s-power/model/v1" || 0x00 || sha256`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSignature {
    /// The publisher's Ed25519 public key (64 hex).
    pub public_key: Ed25519PublicKey,
    /// The signature (128 hex).
    pub signature: Ed25519Signature,
}

/// Encrypted model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelEncryption {
    /// The decryption key: one key of a Secret in this namespace, mounted into the runtime
    /// container only. (Attestation-gated key release is not implemented yet.)
    pub key_ref: SecretKeyReference,
}

/// One key of a Secret in the InferenceModel's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyReference {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A reference to an AttestationPolicy in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyReference {
    /// The AttestationPolicy's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Rolling update limits (absolute numbers or percentages).
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(string(self.maxSurge) in ['0', '0%'] && string(self.maxUnavailable) in ['0', '0%'])").message("maxSurge and maxUnavailable cannot both be 0"))]
pub struct Rollout {
    /// Extra pods during a rollout. Default 1.
    #[serde(default = "one")]
    pub max_surge: IntOrString,
    /// Pods that may be unavailable during a rollout. Default 0: old pods keep serving until
    /// new ones are attested.
    #[serde(default = "zero")]
    pub max_unavailable: IntOrString,
}

fn one() -> IntOrString {
    IntOrString::Int(1)
}
fn zero() -> IntOrString {
    IntOrString::Int(0)
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            max_surge: one(),
            max_unavailable: zero(),
        }
    }
}

/// How the runtime pods run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSpec {
    /// The `a3s-power` image; the operator's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,
    /// RuntimeClass of the pods. Unset: derived from the policy's TEE (`kata-qemu-snp` for
    /// SEV-SNP, `kata-qemu-tdx` for TDX; none for simulated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub runtime_class_name: Option<String>,
    /// CPU and memory of the runtime container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Context window in tokens; the model's own when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub context_size: Option<u32>,
    /// Inference threads; one per available CPU when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub threads: Option<u32>,
    /// Touch weights one layer at a time (peak memory about one layer plus KV cache).
    #[serde(default)]
    pub layer_streaming: bool,
    /// Privacy settings of the runtime.
    #[serde(default)]
    pub privacy: PrivacySpec,
}

/// Privacy settings of the runtime.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrivacySpec {
    /// Redact prompts and completions from logs. Default true.
    #[serde(default = "yes")]
    pub redact_logs: bool,
    /// Round token counts in responses (token-count side channel).
    #[serde(default)]
    pub suppress_token_metrics: bool,
    /// Pad every response to at least this long (timing side channel), e.g. 250ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing_padding: Option<crate::validated::GoDuration>,
}

fn yes() -> bool {
    true
}

impl Default for PrivacySpec {
    fn default() -> Self {
        PrivacySpec {
            redact_logs: true,
            suppress_token_metrics: false,
            timing_padding: None,
        }
    }
}

/// Service type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// The Service in front of the attested pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service port of the OpenAI API. Default 80.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Service type. Default ClusterIP.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
}

fn default_port() -> i32 {
    80
}

impl Default for ServiceSpec {
    fn default() -> Self {
        ServiceSpec {
            port: default_port(),
            type_: ServiceType::ClusterIP,
        }
    }
}

/// Observed state of an InferenceModel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferenceModelStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, ModelVerified, PolicyResolved, Attested, Available, Progressing, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Pods of the current Deployment.
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are Ready (containers ready and attested).
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods whose last attestation was accepted.
    #[serde(default)]
    pub attested_replicas: i32,
    /// Pods running the current model and configuration.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Label selector of the pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// In-cluster OpenAI base URL, `http://<service>.<namespace>.svc:<port>/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The model the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelStatus>,
    /// Attestation summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<AttestationStatus>,
}

/// The model the status describes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    pub served_name: String,
    pub sha256: String,
}

/// Attestation summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttestationStatus {
    /// The AttestationPolicy used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Its generation when last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_generation: Option<i64>,
    /// TEE of the attested pods (sev-snp, tdx, simulated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tee_type: Option<String>,
    /// When a pod was last verified successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_time: Option<Time>,
    /// The latest failures (at most 5, newest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub recent_failures: Vec<AttestationFailure>,
}

/// One failed attestation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttestationFailure {
    pub pod: String,
    /// CamelCase reason, e.g. MeasurementMismatch.
    pub reason: String,
    /// Expected vs actual of the first failing check.
    pub message: String,
    pub time: Time,
}
