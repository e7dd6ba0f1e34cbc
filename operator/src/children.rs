//! The objects an `InferenceModel` owns — ConfigMap (runtime HCL), Deployment, Service — built
//! as pure functions of the InferenceModel, its policy's TEE and the operator's defaults, ready
//! for server-side apply.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, PersistentVolumeClaimVolumeSource,
    PodReadinessGate, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use power_attest::TeeKind;
use power_crds::InferenceModel;
use power_crds::names::{
    ATTESTED_CONDITION, CONFIG_HASH_ANNOTATION, MODEL_DIGEST_ANNOTATION, MODEL_LABEL,
};

use crate::runtime_config::{self, ModelDelivery, RuntimePlan};

/// Field manager of every apply of the children and of status.
pub const MANAGER: &str = "a3s-power-operator";
/// `app.kubernetes.io/name` of runtime pods.
pub const APP_NAME: &str = "a3s-power";

/// Operator-wide defaults.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Runtime image when `spec.runtime.image` is unset.
    pub runtime_image: String,
}

/// RuntimeClass for a TEE kind.
pub fn runtime_class_for(tee: Option<TeeKind>) -> Option<&'static str> {
    match tee? {
        TeeKind::SevSnp => Some("kata-qemu-snp"),
        TeeKind::Tdx => Some("kata-qemu-tdx"),
        TeeKind::Simulated => None,
    }
}

/// The pod selector labels (immutable for the Deployment's life).
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), name.to_string()),
        (MODEL_LABEL.to_string(), name.to_string()),
    ])
}

/// The selector as a string (`status.selector`, pod list queries).
pub fn selector_string(name: &str) -> String {
    selector_labels(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// All labels of children and pods.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(name);
    l.insert("app.kubernetes.io/component".into(), "inference".into());
    l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    l
}

fn owner(im: &InferenceModel) -> Option<OwnerReference> {
    im.controller_owner_ref(&())
}

fn meta(im: &InferenceModel, name: &str, ns: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        labels: Some(labels(name)),
        owner_references: owner(im).map(|o| vec![o]),
        ..Default::default()
    }
}

/// ConfigMap holding the runtime's `config.hcl`.
pub fn config_map(im: &InferenceModel, name: &str, ns: &str, plan: &RuntimePlan) -> ConfigMap {
    ConfigMap {
        metadata: meta(im, name, ns),
        data: Some(BTreeMap::from([(
            runtime_config::CONFIG_FILE.to_string(),
            plan.hcl.clone(),
        )])),
        ..Default::default()
    }
}

/// The Service in front of the attested pods (EndpointSlices list only Ready pods, and a pod
/// is Ready only when its attestation gate is True).
pub fn service(im: &InferenceModel, name: &str, ns: &str) -> Service {
    Service {
        metadata: meta(im, name, ns),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(name)),
            type_: Some(
                match im.spec.service.type_ {
                    power_crds::inference_model::ServiceType::ClusterIP => "ClusterIP",
                    power_crds::inference_model::ServiceType::NodePort => "NodePort",
                    power_crds::inference_model::ServiceType::LoadBalancer => "LoadBalancer",
                }
                .into(),
            ),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: im.spec.service.port,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Default::default()
    }
}

/// The Deployment of runtime pods.
pub fn deployment(
    im: &InferenceModel,
    name: &str,
    ns: &str,
    plan: &RuntimePlan,
    tee: Option<TeeKind>,
    defaults: &Defaults,
) -> Deployment {
    let rt = &im.spec.runtime;
    let image = rt
        .image
        .clone()
        .unwrap_or_else(|| defaults.runtime_image.clone());
    let config_mount = mount("config", runtime_config::CONFIG_DIR, true);
    let data_mount = mount("data", runtime_config::DATA_DIR, false);

    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        config_mount.clone(),
        data_mount.clone(),
        mount("tmp", "/tmp", false),
    ];

    if let ModelDelivery::Volume { claim, .. } = &plan.delivery {
        volumes.push(Volume {
            name: "models".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        });
        mounts.push(mount("models", runtime_config::MODELS_DIR, true));
    }
    if let Some((secret, key)) = &plan.key_secret {
        // Only that key of that Secret, and only into the runtime container.
        volumes.push(Volume {
            name: "model-key".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![KeyToPath {
                    key: key.clone(),
                    path: runtime_config::KEY_FILE.into(),
                    mode: Some(0o400),
                }]),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(mount("model-key", runtime_config::KEY_DIR, true));
    }
    let env: Vec<EnvVar> = plan
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..Default::default()
        })
        .collect();

    let init_containers = plan.pull_command.as_ref().map(|cmd| {
        let mut init_env = env.clone();
        if let ModelDelivery::Pull {
            token_secret: Some((secret, key)),
            ..
        } = &plan.delivery
        {
            init_env.push(EnvVar {
                name: "HF_TOKEN".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.clone(),
                        key: key.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        vec![Container {
            name: "fetch-model".into(),
            image: Some(image.clone()),
            command: Some(cmd.clone()),
            env: Some(init_env),
            volume_mounts: Some(vec![
                config_mount.clone(),
                data_mount.clone(),
                mount("tmp", "/tmp", false),
            ]),
            security_context: Some(restricted()),
            resources: rt.resources.clone(),
            ..Default::default()
        }]
    });

    let runtime = Container {
        name: "runtime".into(),
        image: Some(image),
        command: Some(plan.serve_command.clone()),
        env: Some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: runtime_config::HTTP_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("ra-tls".into()),
                container_port: runtime_config::RA_TLS_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        readiness_probe: Some(http_probe("/ready", 5, 3)),
        liveness_probe: Some(http_probe("/health", 10, 6)),
        startup_probe: Some(http_probe("/health", 2, 150)),
        volume_mounts: Some(mounts),
        security_context: Some(restricted()),
        resources: rt.resources.clone(),
        ..Default::default()
    };

    let pod_labels = labels(name);
    let annotations = BTreeMap::from([
        (CONFIG_HASH_ANNOTATION.to_string(), plan.hash.clone()),
        (
            MODEL_DIGEST_ANNOTATION.to_string(),
            im.spec.model.sha256.to_string(),
        ),
    ]);
    let runtime_class_name = rt
        .runtime_class_name
        .clone()
        .or_else(|| runtime_class_for(tee).map(String::from));

    Deployment {
        metadata: meta(im, name, ns),
        spec: Some(DeploymentSpec {
            replicas: Some(im.spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(im.spec.rollout.max_surge.clone()),
                    max_unavailable: Some(im.spec.rollout.max_unavailable.clone()),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    init_containers,
                    containers: vec![runtime],
                    volumes: Some(volumes),
                    readiness_gates: Some(vec![PodReadinessGate {
                        condition_type: ATTESTED_CONDITION.into(),
                    }]),
                    runtime_class_name,
                    node_selector: (!rt.node_selector.is_empty()).then(|| rt.node_selector.clone()),
                    tolerations: (!rt.tolerations.is_empty()).then(|| rt.tolerations.clone()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        fs_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ModelExt, model};

    fn pod_spec(d: &Deployment) -> &PodSpec {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    #[test]
    fn pods_carry_the_gate_labels_and_restricted_security() {
        let im = model("chat");
        let plan = runtime_config::plan(&im, Some(TeeKind::SevSnp));
        let d = deployment(
            &im,
            "chat",
            "ml",
            &plan,
            Some(TeeKind::SevSnp),
            &crate::fixtures::defaults(),
        );
        let ps = pod_spec(&d);
        assert_eq!(
            ps.readiness_gates.as_ref().expect("gates")[0].condition_type,
            "power.a3s.dev/attested"
        );
        assert_eq!(ps.runtime_class_name.as_deref(), Some("kata-qemu-snp"));
        let c = &ps.containers[0];
        let sc = c.security_context.as_ref().expect("sc");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.as_deref()),
            Some("/ready")
        );
        assert_eq!(
            c.liveness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.as_deref()),
            Some("/health")
        );
        let tl = d
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .expect("labels");
        for k in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
            "app.kubernetes.io/managed-by",
            "power.a3s.dev/model",
        ] {
            assert!(tl.contains_key(k), "{k}");
        }
        let strategy = d
            .spec
            .as_ref()
            .and_then(|s| s.strategy.as_ref())
            .and_then(|s| s.rolling_update.as_ref())
            .expect("ru");
        assert_eq!(strategy.max_surge, Some(IntOrString::Int(1)));
        assert_eq!(strategy.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(
            d.metadata.owner_references.as_ref().expect("owner")[0].kind,
            "InferenceModel"
        );
    }

    #[test]
    fn explicit_runtime_class_wins_and_simulated_has_none() {
        let im = model("chat");
        let plan = runtime_config::plan(&im, Some(TeeKind::Simulated));
        let d = deployment(
            &im,
            "chat",
            "ml",
            &plan,
            Some(TeeKind::Simulated),
            &crate::fixtures::defaults(),
        );
        assert_eq!(pod_spec(&d).runtime_class_name, None);
        let mut im = model("chat");
        im.spec.runtime.runtime_class_name = Some("kata-custom".into());
        let d = deployment(
            &im,
            "chat",
            "ml",
            &plan,
            Some(TeeKind::Tdx),
            &crate::fixtures::defaults(),
        );
        assert_eq!(
            pod_spec(&d).runtime_class_name.as_deref(),
            Some("kata-custom")
        );
    }

    #[test]
    fn the_key_secret_is_mounted_as_one_item_into_the_runtime_only() {
        let im = model("chat").with_key("model-key", "aes");
        let plan = runtime_config::plan(&im, None);
        let d = deployment(&im, "chat", "ml", &plan, None, &crate::fixtures::defaults());
        let ps = pod_spec(&d);
        let v = ps
            .volumes
            .as_ref()
            .expect("v")
            .iter()
            .find(|v| v.name == "model-key")
            .expect("key volume");
        let items = v
            .secret
            .as_ref()
            .and_then(|s| s.items.as_ref())
            .expect("items");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].key, "aes");
        let init = &ps.init_containers.as_ref().expect("init")[0];
        assert!(
            !init
                .volume_mounts
                .as_ref()
                .expect("m")
                .iter()
                .any(|m| m.name == "model-key")
        );
        assert!(
            ps.containers[0]
                .volume_mounts
                .as_ref()
                .expect("m")
                .iter()
                .any(|m| m.name == "model-key")
        );
    }
}
