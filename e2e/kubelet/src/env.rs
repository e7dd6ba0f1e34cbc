//! A container's environment and argv, resolved the way the kubelet does: `envFrom`, then `env`
//! (literal values with `$(VAR)` expansion, downward-API field refs, ConfigMap and Secret keys),
//! plus `KUBERNETES_SERVICE_HOST/PORT`; `$(VAR)` expansion in `command` and `args`.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Container, ObjectFieldSelector, Pod, Secret};

/// The objects a pod refers to, fetched before its containers start.
#[derive(Clone, Debug, Default)]
pub struct PodObjects {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
}

impl PodObjects {
    pub fn config_map_value(&self, name: &str, key: &str) -> Option<String> {
        let cm = self.config_maps.get(name)?;
        cm.data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
            .or_else(|| {
                cm.binary_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            })
    }

    pub fn secret_value(&self, name: &str, key: &str) -> Option<String> {
        let s = self.secrets.get(name)?;
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .or_else(|| s.string_data.as_ref().and_then(|d| d.get(key)).cloned())
    }
}

/// Runtime facts the downward API exposes.
#[derive(Clone, Debug, Default)]
pub struct PodRuntime {
    pub pod_ip: String,
    pub host_ip: String,
    pub kubernetes_service: Option<(String, i32)>,
}

/// Resolves a downward-API `fieldRef` against the pod.
pub fn field_ref(pod: &Pod, rt: &PodRuntime, f: &ObjectFieldSelector) -> anyhow::Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let path = f.field_path.as_str();
    let from_map = |m: Option<&BTreeMap<String, String>>, key: &str| {
        m.and_then(|m| m.get(key)).cloned().unwrap_or_default()
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned()),
        "status.podIP" | "status.podIPs" => rt.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => rt.host_ip.clone(),
        _ => {
            if let Some(key) = bracket_key(path, "metadata.labels") {
                from_map(meta.labels.as_ref(), key)
            } else if let Some(key) = bracket_key(path, "metadata.annotations") {
                from_map(meta.annotations.as_ref(), key)
            } else {
                bail!("fieldRef {path:?} is not supported by the process kubelet")
            }
        }
    };
    Ok(value)
}

/// `metadata.labels['app']` → `app`.
fn bracket_key<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    let rest = rest.trim_matches(|c| c == '\'' || c == '"');
    Some(rest)
}

/// The environment of `container`, in the kubelet's order (later entries win).
pub fn container_env(
    pod: &Pod,
    container: &Container,
    objs: &PodObjects,
    rt: &PodRuntime,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    };
    if let Some((host, port)) = &rt.kubernetes_service {
        set(&mut env, "KUBERNETES_SERVICE_HOST".into(), host.clone());
        set(&mut env, "KUBERNETES_SERVICE_PORT".into(), port.to_string());
        set(
            &mut env,
            "KUBERNETES_SERVICE_PORT_HTTPS".into(),
            port.to_string(),
        );
        set(
            &mut env,
            "KUBERNETES_PORT".into(),
            format!("tcp://{host}:{port}"),
        );
    }
    if let Some(name) = &pod.metadata.name {
        set(&mut env, "HOSTNAME".into(), name.clone());
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match objs.config_maps.get(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => bail!("envFrom: configmap {:?} not found", r.name),
            }
        }
        if let Some(r) = &from.secret_ref {
            match objs.secrets.get(&r.name) {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => bail!("envFrom: secret {:?} not found", r.name),
            }
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            Some(expand(v, &env))
        } else if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                Some(field_ref(pod, rt, f).with_context(|| format!("env {}", e.name))?)
            } else if let Some(k) = &src.config_map_key_ref {
                match objs.config_map_value(&k.name, &k.key) {
                    Some(v) => Some(v),
                    None if k.optional == Some(true) => None,
                    None => bail!(
                        "env {}: key {:?} of configmap {:?} not found",
                        e.name,
                        k.key,
                        k.name
                    ),
                }
            } else if let Some(k) = &src.secret_key_ref {
                match objs.secret_value(&k.name, &k.key) {
                    Some(v) => Some(v),
                    None if k.optional == Some(true) => None,
                    None => bail!(
                        "env {}: key {:?} of secret {:?} not found",
                        e.name,
                        k.key,
                        k.name
                    ),
                }
            } else {
                bail!(
                    "env {}: this valueFrom is not supported by the process kubelet",
                    e.name
                )
            }
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            set(&mut env, e.name.clone(), v);
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }
    Ok(env)
}

/// Kubernetes `$(VAR)` expansion: defined variables are replaced, `$$` is a literal `$`, and
/// references to undefined variables are left as they are.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapKeySelector, EnvVar, EnvVarSource, ObjectFieldSelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn var(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let env = [var("A", "x"), var("B", "y")];
        assert_eq!(expand("$(A)-$(B)", &env), "x-y");
        assert_eq!(expand("$(C)", &env), "$(C)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
        assert_eq!(expand("$(A", &env), "$(A");
    }

    #[test]
    fn env_resolves_field_and_configmap_refs() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let field = |p: &str| EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: p.into(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        };
        let container = Container {
            name: "c".into(),
            env: Some(vec![
                EnvVar {
                    name: "IP".into(),
                    value_from: Some(field("status.podIP")),
                    value: None,
                },
                EnvVar {
                    name: "APP".into(),
                    value_from: Some(field("metadata.labels['app']")),
                    value: None,
                },
                EnvVar {
                    name: "URL".into(),
                    value: Some("http://$(IP):80".into()),
                    value_from: None,
                },
                EnvVar {
                    name: "CM".into(),
                    value_from: Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cfg".into(),
                            key: "k".into(),
                            optional: None,
                        }),
                        ..EnvVarSource::default()
                    }),
                    value: None,
                },
            ]),
            ..Container::default()
        };
        let mut objs = PodObjects::default();
        objs.config_maps.insert(
            "cfg".into(),
            ConfigMap {
                data: Some([("k".to_owned(), "v".to_owned())].into()),
                ..ConfigMap::default()
            },
        );
        let rt = PodRuntime {
            pod_ip: "10.244.0.7".into(),
            host_ip: "10.245.0.10".into(),
            kubernetes_service: Some(("10.96.0.1".into(), 443)),
        };
        let env = container_env(&pod, &container, &objs, &rt).unwrap();
        let get = |k: &str| env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.as_str());
        assert_eq!(get("IP"), Some("10.244.0.7"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("URL"), Some("http://10.244.0.7:80"));
        assert_eq!(get("CM"), Some("v"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("HOSTNAME"), Some("p"));

        objs.config_maps.clear();
        let err = container_env(&pod, &container, &objs, &rt).unwrap_err();
        assert!(
            err.to_string().contains("configmap \"cfg\" not found"),
            "{err}"
        );
    }
}
