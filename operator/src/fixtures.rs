//! Fixture builders for tests: domain objects, not pasted JSON.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use power_crds::attestation_policy::{Enforcement, ReferenceValueSet, SimulatedReferenceValues};
use power_crds::inference_model::{
    ModelEncryption, ModelSource, ModelSpec, PolicyReference, PvcSource, SecretKeyReference,
};
use power_crds::validated::{Measurement, ModelDigest};
use power_crds::{AttestationPolicy, AttestationPolicySpec, InferenceModel, InferenceModelSpec};

use crate::children::{Defaults, selector_labels};

pub const DIGEST: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
pub const NS: &str = "ml";

pub fn defaults() -> Defaults {
    Defaults {
        runtime_image: "ghcr.io/a3s-lab/power:test".into(),
    }
}

/// An InferenceModel `name` in `ml`, serving `tiny` from a URL under policy `sim`.
pub fn model(name: &str) -> InferenceModel {
    let mut im = InferenceModel::new(
        name,
        InferenceModelSpec {
            model: ModelSpec {
                served_name: "tiny".into(),
                source: ModelSource {
                    url: Some("http://10.245.0.1:8000/tiny.gguf".into()),
                    ..Default::default()
                },
                sha256: ModelDigest(DIGEST.into()),
                signature: None,
                encryption: None,
            },
            attestation_policy_ref: PolicyReference { name: "sim".into() },
            replicas: 2,
            rollout: Default::default(),
            runtime: Default::default(),
            service: Default::default(),
        },
    );
    im.metadata.namespace = Some(NS.into());
    im.metadata.uid = Some(format!("uid-{name}"));
    im.metadata.generation = Some(1);
    im
}

pub trait ModelExt: Sized {
    fn with_pvc(self, claim: &str, path: &str) -> Self;
    fn with_digest(self, d: &str) -> Self;
    fn with_key(self, secret: &str, key: &str) -> Self;
    fn with_policy(self, p: &str) -> Self;
    fn deleting(self) -> Self;
}

impl ModelExt for InferenceModel {
    fn with_pvc(mut self, claim: &str, path: &str) -> Self {
        self.spec.model.source = ModelSource {
            pvc: Some(PvcSource {
                claim_name: claim.into(),
                path: path.into(),
            }),
            ..Default::default()
        };
        self
    }
    fn with_digest(mut self, d: &str) -> Self {
        self.spec.model.sha256 = ModelDigest(d.into());
        self.metadata.generation = self.metadata.generation.map(|g| g + 1);
        self
    }
    fn with_key(mut self, secret: &str, key: &str) -> Self {
        self.spec.model.encryption = Some(ModelEncryption {
            key_ref: SecretKeyReference {
                name: secret.into(),
                key: key.into(),
            },
        });
        self
    }
    fn with_policy(mut self, p: &str) -> Self {
        self.spec.attestation_policy_ref.name = p.into();
        self
    }
    fn deleting(mut self) -> Self {
        self.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        self
    }
}

pub const MEASUREMENT: &str = "abababababababababababababababababababababababababababababababababababababababababababababababab";

/// A simulated-evidence policy `name` in `ml` pinning [`MEASUREMENT`].
pub fn policy(name: &str) -> AttestationPolicy {
    let mut p = AttestationPolicy::new(
        name,
        AttestationPolicySpec {
            allow_simulated: true,
            reference_value_sets: vec![ReferenceValueSet {
                name: Some("dev".into()),
                simulated: Some(SimulatedReferenceValues {
                    measurements: vec![Measurement(MEASUREMENT.into())],
                }),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    p.metadata.namespace = Some(NS.into());
    p.metadata.generation = Some(1);
    p
}

pub trait PolicyExt: Sized {
    fn audit(self) -> Self;
    fn generation(self, g: i64) -> Self;
}

impl PolicyExt for AttestationPolicy {
    fn audit(mut self) -> Self {
        self.spec.enforcement = Enforcement::Audit;
        self
    }
    fn generation(mut self, g: i64) -> Self {
        self.metadata.generation = Some(g);
        self
    }
}

/// A Running pod of model `chat` (containers not yet ready).
pub fn pod(name: &str, ip: &str) -> Pod {
    let mut labels = selector_labels("chat");
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "a3s-power-operator".into(),
    );
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                power_crds::names::MODEL_DIGEST_ANNOTATION.into(),
                DIGEST.into(),
            )])),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            conditions: Some(vec![]),
            ..Default::default()
        }),
    }
}

pub trait PodExt: Sized {
    fn ready(self) -> Self;
    fn condition(self, type_: &str, status: &str) -> Self;
    fn terminating(self) -> Self;
    /// Adds a container status (name, restart count, container ID).
    fn container(self, name: &str, restarts: i32, id: &str) -> Self;
}

impl PodExt for Pod {
    fn ready(self) -> Self {
        self.condition("ContainersReady", "True")
    }
    fn condition(mut self, type_: &str, status: &str) -> Self {
        if let Some(s) = self.status.as_mut() {
            s.conditions
                .get_or_insert_with(Vec::new)
                .push(PodCondition {
                    type_: type_.into(),
                    status: status.into(),
                    ..Default::default()
                });
        }
        self
    }
    fn terminating(mut self) -> Self {
        self.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        self
    }
    fn container(mut self, name: &str, restarts: i32, id: &str) -> Self {
        if let Some(s) = self.status.as_mut() {
            s.container_statuses
                .get_or_insert_with(Vec::new)
                .push(ContainerStatus {
                    name: name.into(),
                    restart_count: restarts,
                    container_id: Some(id.into()),
                    ..Default::default()
                });
        }
        self
    }
}
