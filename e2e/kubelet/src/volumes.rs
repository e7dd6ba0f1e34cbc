//! Pod volumes materialized as directories in the pod's run folder: emptyDir, configMap, secret,
//! downwardAPI, projected (including the ServiceAccount token the admission plugin adds), and
//! hostPath. ConfigMap and Secret content is a snapshot taken when the pod starts.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{KeyToPath, Pod, ServiceAccountTokenProjection, Volume};

use crate::env::{PodObjects, PodRuntime, field_ref};

/// A file inside a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeFile {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumePlan {
    /// A directory in the run folder holding these files (emptyDir: none).
    Files(Vec<VolumeFile>),
    /// A directory of the machine, bound as it is.
    HostPath { path: PathBuf, create: bool },
}

/// Identifies a requested ServiceAccount token: (audience, expirationSeconds).
pub type TokenKey = (String, i64);

pub fn token_key(p: &ServiceAccountTokenProjection) -> TokenKey {
    (
        p.audience.clone().unwrap_or_default(),
        p.expiration_seconds.unwrap_or(3600),
    )
}

/// Every ServiceAccount token the pod's projected volumes ask for.
pub fn token_requests(pod: &Pod) -> Vec<ServiceAccountTokenProjection> {
    volumes(pod)
        .iter()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.clone())
        .collect()
}

fn volumes(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The content of every volume of `pod`, by volume name.
pub fn plan(
    pod: &Pod,
    objs: &PodObjects,
    rt: &PodRuntime,
    tokens: &BTreeMap<TokenKey, String>,
) -> anyhow::Result<BTreeMap<String, VolumePlan>> {
    let mut out = BTreeMap::new();
    for v in volumes(pod) {
        let p = plan_volume(pod, v, objs, rt, tokens)
            .with_context(|| format!("volume {:?}", v.name))?;
        out.insert(v.name.clone(), p);
    }
    Ok(out)
}

fn plan_volume(
    pod: &Pod,
    v: &Volume,
    objs: &PodObjects,
    rt: &PodRuntime,
    tokens: &BTreeMap<TokenKey, String>,
) -> anyhow::Result<VolumePlan> {
    let mut files = Vec::new();
    if v.empty_dir.is_some() {
    } else if let Some(h) = &v.host_path {
        let create = matches!(h.type_.as_deref(), Some("DirectoryOrCreate"));
        return Ok(VolumePlan::HostPath {
            path: PathBuf::from(&h.path),
            create,
        });
    } else if let Some(c) = &v.config_map {
        let mode = c.default_mode.unwrap_or(0o644) as u32;
        config_map_files(
            &mut files,
            objs,
            &c.name,
            c.items.as_deref(),
            c.optional,
            mode,
        )?;
    } else if let Some(s) = &v.secret {
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        let name = s.secret_name.clone().unwrap_or_default();
        secret_files(
            &mut files,
            objs,
            &name,
            s.items.as_deref(),
            s.optional,
            mode,
        )?;
    } else if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(0o644) as u32;
        for item in d.items.iter().flatten() {
            let f = item
                .field_ref
                .as_ref()
                .context("downwardAPI: only fieldRef is supported")?;
            files.push(file(
                &item.path,
                field_ref(pod, rt, f)?.into_bytes(),
                item.mode,
                mode,
            )?);
        }
    } else if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        for s in p.sources.iter().flatten() {
            if let Some(c) = &s.config_map {
                config_map_files(
                    &mut files,
                    objs,
                    &c.name,
                    c.items.as_deref(),
                    c.optional,
                    mode,
                )?;
            } else if let Some(c) = &s.secret {
                secret_files(
                    &mut files,
                    objs,
                    &c.name,
                    c.items.as_deref(),
                    c.optional,
                    mode,
                )?;
            } else if let Some(d) = &s.downward_api {
                for item in d.items.iter().flatten() {
                    let f = item
                        .field_ref
                        .as_ref()
                        .context("downwardAPI: only fieldRef is supported")?;
                    files.push(file(
                        &item.path,
                        field_ref(pod, rt, f)?.into_bytes(),
                        item.mode,
                        mode,
                    )?);
                }
            } else if let Some(t) = &s.service_account_token {
                let token = tokens
                    .get(&token_key(t))
                    .context("no ServiceAccount token was issued for this projection")?;
                files.push(file(&t.path, token.clone().into_bytes(), None, mode)?);
            } else {
                bail!("a projected source type is not supported by the process kubelet");
            }
        }
    } else {
        bail!("this volume type is not supported by the process kubelet");
    }
    Ok(VolumePlan::Files(files))
}

fn config_map_files(
    files: &mut Vec<VolumeFile>,
    objs: &PodObjects,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> anyhow::Result<()> {
    let Some(cm) = objs.config_maps.get(name) else {
        if optional == Some(true) {
            return Ok(());
        }
        bail!("configmap {name:?} not found");
    };
    let mut all: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in cm.data.iter().flatten() {
        all.insert(k.clone(), v.clone().into_bytes());
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        all.insert(k.clone(), v.0.clone());
    }
    project(files, all, items, mode, &format!("configmap {name:?}"))
}

fn secret_files(
    files: &mut Vec<VolumeFile>,
    objs: &PodObjects,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> anyhow::Result<()> {
    let Some(s) = objs.secrets.get(name) else {
        if optional == Some(true) {
            return Ok(());
        }
        bail!("secret {name:?} not found");
    };
    let all = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    project(files, all, items, mode, &format!("secret {name:?}"))
}

/// All keys as files, or only `items` at their paths.
fn project(
    files: &mut Vec<VolumeFile>,
    all: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    what: &str,
) -> anyhow::Result<()> {
    match items {
        None => {
            for (k, v) in all {
                files.push(file(&k, v, None, mode)?);
            }
        }
        Some(items) => {
            for i in items {
                let data = all
                    .get(&i.key)
                    .with_context(|| format!("key {:?} not found in {what}", i.key))?;
                files.push(file(&i.path, data.clone(), i.mode, mode)?);
            }
        }
    }
    Ok(())
}

fn file(path: &str, data: Vec<u8>, mode: Option<i32>, default: u32) -> anyhow::Result<VolumeFile> {
    check_relative(path)?;
    Ok(VolumeFile {
        path: path.to_owned(),
        data,
        mode: mode.map_or(default, |m| m as u32),
    })
}

/// Volume file paths and subPaths stay inside their volume.
pub fn check_relative(path: &str) -> anyhow::Result<()> {
    let p = Path::new(path);
    if path.is_empty()
        || !p
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!("path {path:?} must be relative and must not contain '..'");
    }
    Ok(())
}

/// Writes the planned volumes under `dir/<volume name>`; returns each volume's source directory.
pub fn materialize(
    plans: &BTreeMap<String, VolumePlan>,
    dir: &Path,
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for (name, plan) in plans {
        let path = match plan {
            VolumePlan::HostPath { path, create } => {
                if *create {
                    std::fs::create_dir_all(path)
                        .with_context(|| format!("hostPath {}", path.display()))?;
                }
                path.clone()
            }
            VolumePlan::Files(files) => {
                let root = dir.join(name);
                std::fs::create_dir_all(&root)
                    .with_context(|| format!("creating {}", root.display()))?;
                for f in files {
                    let p = root.join(&f.path);
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(&p, &f.data)
                        .with_context(|| format!("writing {}", p.display()))?;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode & 0o7777))?;
                }
                // emptyDir and the like are world-writable like the kubelet's.
                if files.is_empty() {
                    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777))?;
                }
                root
            }
        };
        out.insert(name.clone(), path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, EmptyDirVolumeSource, PodSpec,
        ProjectedVolumeSource, VolumeProjection,
    };

    fn pod(volumes: Vec<Volume>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                volumes: Some(volumes),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn objs() -> PodObjects {
        let mut o = PodObjects::default();
        o.config_maps.insert(
            "cfg".into(),
            ConfigMap {
                data: Some([("a.hcl".to_owned(), "x = 1".to_owned())].into()),
                ..ConfigMap::default()
            },
        );
        o.config_maps.insert(
            "kube-root-ca.crt".into(),
            ConfigMap {
                data: Some([("ca.crt".to_owned(), "PEM".to_owned())].into()),
                ..ConfigMap::default()
            },
        );
        o
    }

    #[test]
    fn projected_service_account_volume_has_token_ca_and_namespace() {
        let sat = ServiceAccountTokenProjection {
            path: "token".into(),
            expiration_seconds: Some(3607),
            audience: None,
        };
        let p = pod(vec![Volume {
            name: "kube-api-access".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o644),
                sources: Some(vec![
                    VolumeProjection {
                        service_account_token: Some(sat.clone()),
                        ..VolumeProjection::default()
                    },
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: "kube-root-ca.crt".into(),
                            items: Some(vec![KeyToPath {
                                key: "ca.crt".into(),
                                path: "ca.crt".into(),
                                mode: None,
                            }]),
                            optional: None,
                        }),
                        ..VolumeProjection::default()
                    },
                ]),
            }),
            ..Volume::default()
        }]);
        assert_eq!(token_requests(&p), vec![sat.clone()]);
        let tokens = [(token_key(&sat), "jwt".to_owned())].into();
        let plans = plan(&p, &objs(), &PodRuntime::default(), &tokens).unwrap();
        let VolumePlan::Files(files) = &plans["kube-api-access"] else {
            panic!("not files")
        };
        let names: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["token", "ca.crt"]);
        assert_eq!(files[0].data, b"jwt");
    }

    #[test]
    fn missing_configmap_fails_unless_optional_and_paths_stay_inside() {
        let vol = |name: &str, optional| Volume {
            name: "v".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.into(),
                optional,
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        };
        let none = BTreeMap::new();
        let rt = PodRuntime::default();
        assert!(plan(&pod(vec![vol("nope", None)]), &objs(), &rt, &none).is_err());
        assert!(plan(&pod(vec![vol("nope", Some(true))]), &objs(), &rt, &none).is_ok());
        assert!(check_relative("../etc/passwd").is_err());
        assert!(check_relative("/etc/passwd").is_err());
        assert!(check_relative("a/b").is_ok());
    }

    #[test]
    fn materialize_writes_files_with_modes() {
        let dir = std::env::temp_dir().join(format!("e2e-kubelet-vol-{}", std::process::id()));
        let p = pod(vec![
            Volume {
                name: "cfg".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "cfg".into(),
                    default_mode: Some(0o600),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]);
        let plans = plan(&p, &objs(), &PodRuntime::default(), &BTreeMap::new()).unwrap();
        let dirs = materialize(&plans, &dir).unwrap();
        let f = dirs["cfg"].join("a.hcl");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "x = 1");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(dirs["scratch"].is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
