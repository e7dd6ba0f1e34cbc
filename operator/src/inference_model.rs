//! The InferenceModel reconciler: resolve the policy, apply the children, run the attestation
//! gate over the pods, and write a status computed from what is observed (Deployment, pods, gate
//! results, EndpointSlices). No finalizer: every child is owned and garbage-collected, and the
//! gate's memory of a deleted model's pods is dropped with the pods.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use power_attest::{Policy, TeeKind};
use power_crds::condition::*;
use power_crds::inference_model::{AttestationFailure, AttestationStatus, ModelStatus};
use power_crds::{AttestationPolicy, InferenceModel, InferenceModelStatus};

use crate::children::{self, MANAGER};
use crate::conditions::{Desired, merge};
use crate::context::{Context, RESYNC, SOON};
use crate::error::{Error, Result};
use crate::gate::{self, Decision, PodRecord};
use crate::runtime_config;

/// The resolved policy, or why it is not usable.
enum Resolved {
    Ok {
        policy: Box<Policy>,
        generation: Option<i64>,
        tee: Option<TeeKind>,
    },
    Failed {
        reason: &'static str,
        message: String,
    },
}

async fn resolve_policy(api: &Api<AttestationPolicy>, name: &str) -> Result<Resolved> {
    let Some(p) = api.get_opt(name).await? else {
        return Ok(Resolved::Failed {
            reason: "PolicyNotFound",
            message: format!("AttestationPolicy {name} not found in this namespace"),
        });
    };
    match p.spec.to_policy() {
        Ok(policy) => {
            let kinds = p.spec.tee_kinds();
            Ok(Resolved::Ok {
                policy: Box::new(policy),
                generation: p.metadata.generation,
                tee: (kinds.len() == 1).then(|| kinds[0]),
            })
        }
        Err(e) => Ok(Resolved::Failed {
            reason: "PolicyInvalid",
            message: format!("AttestationPolicy {name}: {e}"),
        }),
    }
}

async fn apply<K>(api: &Api<K>, name: &str, obj: &K) -> Result<K>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

async fn publish(
    ctx: &Context,
    im: &InferenceModel,
    type_: EventType,
    reason: &str,
    note: String,
    pod: Option<&Pod>,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(crate::conditions::truncate(&note, 1000)),
        action: "Attest".into(),
        secondary: pod.map(|p| p.object_ref(&())),
    };
    // An Event that cannot be written must not fail the reconcile.
    if let Err(e) = ctx.recorder.publish(&ev, &im.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "publishing an Event failed");
    }
}

fn pod_ref_name(p: &Pod) -> String {
    p.name_any()
}

/// Takes an admitted pod out of the Service without an attestation (gate condition False with
/// `reason`), with a `PodRemovedFromService` Warning when that flips it. Pods not admitted are
/// left as they are.
async fn withdraw(
    ctx: &Context,
    im: &InferenceModel,
    pods_api: &Api<Pod>,
    p: &Pod,
    reason: &str,
    message: String,
) -> Result<()> {
    if gate::current_condition(p).is_none_or(|(s, _, _)| s != "True") {
        return Ok(());
    }
    let d = Decision {
        admit: false,
        passed: false,
        reason: reason.into(),
        message,
        tee: None,
        model_mismatch: false,
    };
    if gate::write_condition(pods_api, p, &d).await? {
        publish(
            ctx,
            im,
            EventType::Warning,
            "PodRemovedFromService",
            format!(
                "pod {} removed from Service {}: {reason}",
                pod_ref_name(p),
                im.name_any()
            ),
            Some(p),
        )
        .await;
    }
    Ok(())
}

/// Exit code of a failed `fetch-model` init container, if any.
fn fetch_failure(p: &Pod) -> Option<i32> {
    let s = p.status.as_ref()?.init_container_statuses.as_ref()?;
    let c = s.iter().find(|c| c.name == "fetch-model")?;
    let term = |st: Option<&k8s_openapi::api::core::v1::ContainerState>| {
        st.and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code)
            .filter(|c| *c != 0)
    };
    term(c.state.as_ref()).or_else(|| term(c.last_state.as_ref()))
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Ready endpoints of the Service's EndpointSlices.
fn serving_endpoints(slices: &[EndpointSlice]) -> i32 {
    let mut addrs: Vec<&str> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        .flat_map(|e| e.addresses.iter().map(String::as_str))
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs.len() as i32
}

/// Reconcile one InferenceModel.
pub async fn reconcile(im: Arc<InferenceModel>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics
        .reconciliations
        .with_label_values(&["InferenceModel"])
        .inc();
    let ns = im
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = im.name_any();
    if im.metadata.deletion_timestamp.is_some() {
        // Owned children are garbage-collected; nothing to clean up.
        return Ok(Action::await_change());
    }
    let client = ctx.client.clone();
    let policy_name = im.spec.attestation_policy_ref.name.clone();
    let resolved = resolve_policy(&Api::namespaced(client.clone(), &ns), &policy_name).await?;
    let tee = match &resolved {
        Resolved::Ok { tee, .. } => *tee,
        Resolved::Failed { .. } => None,
    };

    // Children, server-side applied and owned by the InferenceModel. Without a usable policy no
    // Deployment is created: its pods could never be admitted, and the runtime would not even
    // know which evidence to produce. One that exists already stays (its pods are taken out of
    // the Service below) so a policy edit or re-creation does not restart anything.
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let hold =
        matches!(resolved, Resolved::Failed { .. }) && deployments.get_opt(&name).await?.is_none();
    let dep = if hold {
        Deployment::default()
    } else {
        let plan = runtime_config::plan(&im, tee);
        let cm = children::config_map(&im, &name, &ns, &plan);
        apply(
            &Api::<ConfigMap>::namespaced(client.clone(), &ns),
            &name,
            &cm,
        )
        .await?;
        let dep = children::deployment(&im, &name, &ns, &plan, tee, &ctx.settings.defaults);
        let dep = apply(&deployments, &name, &dep).await?;
        let svc = children::service(&im, &name, &ns);
        apply(
            &Api::<Service>::namespaced(client.clone(), &ns),
            &name,
            &svc,
        )
        .await?;
        dep
    };

    // The gate.
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pods = pods_api
        .list(&ListParams::default().labels(&children::selector_string(&name)))
        .await?
        .items;
    let policy_key = format!("{ns}/{policy_name}");
    let mut requeue = RESYNC;
    let mut new_failures: Vec<AttestationFailure> = Vec::new();
    match &resolved {
        Resolved::Ok {
            policy, generation, ..
        } => {
            let interval = policy.reattest_interval();
            let now = Instant::now();
            let mut jobs: Vec<(Pod, String, gate::Target, Option<PodRecord>)> = Vec::new();
            for p in &pods {
                let uid = p.uid().unwrap_or_default();
                let Some(target) = gate::target_of(p, &im.spec.model.served_name) else {
                    if p.metadata.deletion_timestamp.is_none() {
                        requeue = requeue.min(SOON);
                        // Its containers are not ready (restarting, or failing probes): the
                        // verdict may belong to processes that are gone, so the pod leaves the
                        // Service now and is attested again before it comes back.
                        ctx.gate.forget(&uid);
                        let message = "the runtime's containers are not ready; the pod is \
                                       attested again before it rejoins the Service";
                        withdraw(
                            &ctx,
                            &im,
                            &pods_api,
                            p,
                            "ContainersNotReady",
                            message.into(),
                        )
                        .await?;
                    }
                    continue;
                };
                let rec = ctx.gate.get(&uid);
                let instance = gate::instance_of(p);
                if gate::due(
                    rec.as_ref(),
                    *generation,
                    interval,
                    now,
                    instance.as_deref(),
                ) {
                    jobs.push((p.clone(), uid, target, rec));
                } else if let Some(r) = &rec {
                    let next = interval.saturating_sub(now.saturating_duration_since(r.at));
                    requeue = requeue.min(next.max(Duration::from_secs(1)));
                    if r.decision.reason == "AttestationUnreachable" {
                        requeue = requeue.min(SOON);
                    }
                }
            }
            let results: Vec<_> = futures::stream::iter(jobs)
                .map(|(p, uid, target, rec)| {
                    let ctx = ctx.clone();
                    let policy = (**policy).clone();
                    async move {
                        let started = Instant::now();
                        let outcome = ctx.attestor.attest(target, policy).await;
                        (p, uid, rec, outcome, started.elapsed())
                    }
                })
                .buffer_unordered(ctx.settings.gate_concurrency.max(1))
                .collect()
                .await;
            for (p, uid, previous, outcome, took) in results {
                let d = Decision::from_outcome(&outcome);
                let tee_label = d.tee.map_or("unknown", |t| t.as_str());
                let result = match (&outcome, d.passed, d.admit) {
                    (gate::Outcome::Unreachable(_), _, _) => "error",
                    (_, true, _) => "verified",
                    (_, false, true) => "audit",
                    (_, false, false) => "failed",
                };
                ctx.metrics
                    .attestations
                    .with_label_values(&[result, tee_label])
                    .inc();
                ctx.metrics
                    .attestation_duration
                    .with_label_values(&[tee_label])
                    .observe(took.as_secs_f64());
                let was_admitted = gate::current_condition(&p).is_some_and(|(s, _, _)| s == "True");
                let flipped = gate::write_condition(&pods_api, &p, &d).await?;
                let changed = previous
                    .as_ref()
                    .is_none_or(|r| r.decision.reason != d.reason || r.decision.admit != d.admit);
                let pod = pod_ref_name(&p);
                tracing::info!(pod, result, reason = %d.reason, "attestation");
                if changed {
                    if d.passed {
                        publish(
                            &ctx,
                            &im,
                            EventType::Normal,
                            "AttestationSucceeded",
                            format!("pod {pod}: {}", d.message),
                            Some(&p),
                        )
                        .await;
                    } else {
                        let audit = if d.admit {
                            " (Audit mode: admitted anyway)"
                        } else {
                            ""
                        };
                        publish(
                            &ctx,
                            &im,
                            EventType::Warning,
                            &d.reason,
                            format!("pod {pod}: {}{audit}", d.message),
                            Some(&p),
                        )
                        .await;
                        new_failures.push(AttestationFailure {
                            pod: pod.clone(),
                            reason: d.reason.clone(),
                            message: d.message.clone(),
                            time: Time(k8s_openapi::jiff::Timestamp::now()),
                        });
                    }
                }
                if flipped && d.admit {
                    publish(
                        &ctx,
                        &im,
                        EventType::Normal,
                        "PodAdmittedToService",
                        format!("pod {pod} admitted to Service {name}"),
                        Some(&p),
                    )
                    .await;
                } else if flipped && was_admitted {
                    publish(
                        &ctx,
                        &im,
                        EventType::Warning,
                        "PodRemovedFromService",
                        format!("pod {pod} removed from Service {name}: {}", d.reason),
                        Some(&p),
                    )
                    .await;
                }
                if !d.admit {
                    requeue = requeue.min(SOON);
                }
                let interval_left = if d.reason == "AttestationUnreachable" {
                    SOON
                } else {
                    interval
                };
                requeue = requeue.min(interval_left);
                ctx.gate.put(
                    &uid,
                    PodRecord {
                        at: Instant::now(),
                        wall: k8s_openapi::jiff::Timestamp::now(),
                        policy_generation: *generation,
                        policy: policy_key.clone(),
                        decision: d,
                        instance: gate::instance_of(&p),
                    },
                );
            }
        }
        Resolved::Failed { reason, message } => {
            // Without a usable policy nothing may serve: take admitted pods out.
            for p in &pods {
                withdraw(&ctx, &im, &pods_api, p, reason, message.clone()).await?;
            }
            requeue = requeue.min(Duration::from_secs(30));
        }
    }

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let slices = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
        .await?
        .items;

    let status = compute_status(
        &im,
        &ns,
        &name,
        &resolved,
        &dep,
        &pods,
        &slices,
        &ctx,
        new_failures,
    );
    let old = im.status.clone().unwrap_or_default();
    if status != old {
        flip_events(&ctx, &im, &old, &status).await;
        let api: Api<InferenceModel> = Api::namespaced(client, &ns);
        let patch = serde_json::json!({
            "apiVersion": "power.a3s.dev/v1alpha1",
            "kind": "InferenceModel",
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    Ok(Action::requeue(requeue))
}

/// Events for condition flips a user cares about (one per transition).
async fn flip_events(
    ctx: &Context,
    im: &InferenceModel,
    old: &InferenceModelStatus,
    new: &InferenceModelStatus,
) {
    let status_of = |s: &InferenceModelStatus, t: &str| {
        crate::conditions::find(&s.conditions, t)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let (Some(n), o) = (
        status_of(new, MODEL_VERIFIED),
        status_of(old, MODEL_VERIFIED),
    ) else {
        return;
    };
    if o.as_ref().map(|o| &o.0) != Some(&n.0) && n.0 != "Unknown" {
        let t = if n.0 == "True" {
            EventType::Normal
        } else {
            EventType::Warning
        };
        publish(ctx, im, t, &n.1, n.2, None).await;
    }
    if let Some(n) = status_of(new, POLICY_RESOLVED)
        && n.0 == "False"
        && status_of(old, POLICY_RESOLVED).map(|o| o.0) != Some(n.0.clone())
    {
        publish(ctx, im, EventType::Warning, &n.1, n.2, None).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn compute_status(
    im: &InferenceModel,
    ns: &str,
    name: &str,
    resolved: &Resolved,
    dep: &Deployment,
    pods: &[Pod],
    slices: &[EndpointSlice],
    ctx: &Context,
    new_failures: Vec<AttestationFailure>,
) -> InferenceModelStatus {
    let old = im.status.clone().unwrap_or_default();
    let generation = im.metadata.generation;
    let digest = im.spec.model.sha256.to_string();
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let records: Vec<(&Pod, Option<PodRecord>)> = live
        .iter()
        .map(|p| (*p, ctx.gate.get(&p.uid().unwrap_or_default())))
        .collect();
    let attested: Vec<&PodRecord> = records
        .iter()
        .filter_map(|(_, r)| r.as_ref())
        .filter(|r| r.decision.admit)
        .collect();
    let failing: Vec<(&Pod, &PodRecord)> = records
        .iter()
        .filter_map(|(p, r)| r.as_ref().map(|r| (*p, r)))
        .filter(|(_, r)| !r.decision.admit)
        .collect();
    let attested_n = attested.len() as i32;
    let ready_n = live.iter().filter(|p| pod_ready(p)).count() as i32;
    let serving = serving_endpoints(slices);
    let ds = dep.status.clone().unwrap_or_default();
    let desired = im.spec.replicas;

    let mut conds = Vec::new();
    let policy_ok = match resolved {
        Resolved::Ok { .. } => {
            conds.push(Desired::new(
                POLICY_RESOLVED,
                true,
                "PolicyResolved",
                format!("AttestationPolicy {}", im.spec.attestation_policy_ref.name),
            ));
            true
        }
        Resolved::Failed { reason, message } => {
            conds.push(Desired::new(
                POLICY_RESOLVED,
                false,
                *reason,
                message.clone(),
            ));
            false
        }
    };

    let mismatch = failing.iter().find(|(_, r)| r.decision.model_mismatch);
    let fetch_failed = live
        .iter()
        .find_map(|p| fetch_failure(p).map(|c| (p.name_any(), c)));
    let model = if let Some((p, r)) = mismatch {
        Desired::new(
            MODEL_VERIFIED,
            false,
            "ModelDigestMismatch",
            format!("pod {}: {}", p.name_any(), r.decision.message),
        )
    } else if let Some((p, code)) = fetch_failed {
        Desired::new(
            MODEL_VERIFIED,
            false,
            "ModelFetchFailed",
            format!(
                "pod {p}: init container fetch-model exited with code {code}; the runtime refuses a file whose SHA-256 is not {digest}"
            ),
        )
    } else if attested.iter().any(|r| r.decision.passed) {
        Desired::new(
            MODEL_VERIFIED,
            true,
            "ModelDigestBound",
            format!("attested pods serve sha256 {digest}"),
        )
    } else {
        Desired::unknown(
            MODEL_VERIFIED,
            "AwaitingAttestation",
            "no pod has attested the model digest yet",
        )
    };
    let model_ok = model.status;
    let model_failed = !model.status && !model.unknown;
    let model_reason = model.reason.clone();
    let model_message = model.message.clone();
    conds.push(model);

    let attested_cond = if attested_n > 0 {
        let audit_only = attested.iter().all(|r| !r.decision.passed);
        Desired::new(
            ATTESTED,
            true,
            if audit_only {
                "AuditOnly"
            } else {
                "AttestationSucceeded"
            },
            format!("{attested_n} of {} pods attested", live.len()),
        )
    } else if let Some((p, r)) = failing.first() {
        Desired::new(
            ATTESTED,
            false,
            r.decision.reason.clone(),
            format!("pod {}: {}", p.name_any(), r.decision.message),
        )
    } else if !policy_ok {
        Desired::new(
            ATTESTED,
            false,
            "PolicyNotResolved",
            "no usable AttestationPolicy",
        )
    } else {
        Desired::unknown(
            ATTESTED,
            "AwaitingPods",
            "no runtime pod is ready to attest",
        )
    };
    let attested_reason = attested_cond.reason.clone();
    let attested_msg = attested_cond.message.clone();
    let attested_failed = !attested_cond.status && !attested_cond.unknown;
    conds.push(attested_cond);

    conds.push(if serving > 0 {
        Desired::new(
            AVAILABLE,
            true,
            "EndpointsReady",
            format!("{serving} attested endpoints in the Service"),
        )
    } else {
        Desired::new(
            AVAILABLE,
            false,
            "NoEndpoints",
            "the Service has no ready endpoint",
        )
    });
    let updated = ds.updated_replicas.unwrap_or(0);
    let rolling = ds.observed_generation < dep.metadata.generation
        || updated < desired
        || ds.replicas.unwrap_or(0) > updated;
    conds.push(if rolling {
        Desired::new(
            PROGRESSING,
            true,
            "RollingOut",
            format!("{updated} of {desired} pods updated"),
        )
    } else {
        Desired::new(
            PROGRESSING,
            false,
            "RolloutComplete",
            format!("{updated} pods up to date"),
        )
    });
    conds.push(match failing.first() {
        Some((p, r)) => Desired::new(
            DEGRADED,
            true,
            r.decision.reason.clone(),
            format!("pod {}: {}", p.name_any(), r.decision.message),
        ),
        None if model_failed => {
            Desired::new(DEGRADED, true, model_reason.clone(), model_message.clone())
        }
        None => Desired::new(
            DEGRADED,
            false,
            "AsExpected",
            "no pod is failing attestation",
        ),
    });
    let ready = if desired == 0 {
        Desired::new(READY, false, "ScaledToZero", "spec.replicas is 0")
    } else if !policy_ok {
        let c = &conds[0];
        Desired::new(READY, false, c.reason.clone(), c.message.clone())
    } else if attested_n > 0 && serving > 0 && !model_failed {
        Desired::new(
            READY,
            true,
            "Serving",
            format!(
                "{serving} attested endpoints serve {}",
                im.spec.model.served_name
            ),
        )
    } else if model_failed {
        Desired::new(READY, false, model_reason, model_message)
    } else if attested_failed {
        Desired::new(READY, false, attested_reason, attested_msg)
    } else if attested_n > 0 {
        Desired::new(
            READY,
            false,
            "NoEndpoints",
            "attested pods are not in the Service's endpoints yet",
        )
    } else {
        Desired::new(
            READY,
            false,
            "AwaitingAttestation",
            "no pod has been attested yet",
        )
    };
    let _ = model_ok;
    conds.insert(0, ready);

    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let conditions = merge(&old.conditions, &conds, generation, &now);

    let mut recent: Vec<AttestationFailure> = new_failures;
    recent.extend(
        old.attestation
            .as_ref()
            .map(|a| a.recent_failures.clone())
            .unwrap_or_default(),
    );
    recent.truncate(5);
    let last_verified = attested
        .iter()
        .filter(|r| r.decision.passed)
        .map(|r| r.wall)
        .max()
        .map(Time)
        .or_else(|| {
            old.attestation
                .as_ref()
                .and_then(|a| a.last_verified_time.clone())
        });
    let tee = attested
        .iter()
        .find_map(|r| r.decision.tee)
        .or(match resolved {
            Resolved::Ok { tee, .. } => *tee,
            Resolved::Failed { .. } => None,
        });
    let policy_generation = match resolved {
        Resolved::Ok { generation, .. } => *generation,
        Resolved::Failed { .. } => None,
    };

    InferenceModelStatus {
        observed_generation: generation,
        conditions,
        replicas: ds.replicas.unwrap_or(0),
        ready_replicas: ready_n,
        attested_replicas: attested_n,
        updated_replicas: updated,
        selector: Some(children::selector_string(name)),
        url: Some(format!(
            "http://{name}.{ns}.svc:{}/v1",
            im.spec.service.port
        )),
        model: Some(ModelStatus {
            served_name: im.spec.model.served_name.clone(),
            sha256: digest,
        }),
        attestation: Some(AttestationStatus {
            policy: Some(im.spec.attestation_policy_ref.name.clone()),
            policy_generation,
            tee_type: tee.map(|t| t.as_str().to_string()),
            last_verified_time: last_verified,
            recent_failures: recent,
        }),
    }
}

/// Requeue with backoff on errors; counts them.
pub fn error_policy(_im: Arc<InferenceModel>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "InferenceModel reconcile failed");
    ctx.metrics
        .reconcile_errors
        .with_label_values(&["InferenceModel", err.metric_label()])
        .inc();
    Action::requeue(Duration::from_secs(15))
}

/// The object reference used for Events (exposed for tests).
pub fn reference(im: &InferenceModel) -> ObjectReference {
    im.object_ref(&())
}
