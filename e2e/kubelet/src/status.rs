//! Pod status as the kubelet computes it (`pkg/kubelet/status/generate.go`): the conditions this
//! kubelet owns, and the patch that writes only those.
//!
//! Readiness gates belong to other controllers: Ready is True only when every container is ready
//! AND every gate condition is True, and a gate condition is never written here. The status is
//! written with a strategic-merge patch, which merges `conditions` by `type`, so a concurrent
//! write of a gate condition is never reverted.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// The conditions this kubelet owns; every other condition type is left alone.
pub const OWNED_CONDITIONS: [&str; 4] = [
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// What the pod worker knows about the pod's processes.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub sandbox_ready: bool,
    pub initialized: bool,
    pub phase: Phase,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: Option<Time>,
    pub init_containers: Vec<ContainerStatus>,
    pub containers: Vec<ContainerStatus>,
}

/// A condition without its timestamps, as computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Computed {
    pub type_: &'static str,
    pub status: bool,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// The owned conditions for `pod` given what is observed. Gates are read from `pod.status`.
pub fn compute_conditions(pod: &Pod, obs: &Observed) -> Vec<Computed> {
    let mut out = vec![
        Computed {
            type_: "PodReadyToStartContainers",
            status: obs.sandbox_ready,
            reason: None,
            message: None,
        },
        Computed {
            type_: "Initialized",
            status: obs.initialized,
            reason: (!obs.initialized).then(|| "ContainersNotInitialized".to_owned()),
            message: (!obs.initialized).then(|| {
                format!(
                    "containers with incomplete status: [{}]",
                    unready_names(&obs.init_containers, |c| {
                        c.state
                            .as_ref()
                            .and_then(|s| s.terminated.as_ref())
                            .is_some_and(|t| t.exit_code == 0)
                    })
                )
            }),
        },
    ];

    let unready = unready_names(&obs.containers, |c| c.ready);
    let containers_ready = !obs.containers.is_empty() && unready.is_empty();
    let completed = obs.phase == Phase::Succeeded;
    let (cr_reason, cr_message) = if completed {
        (Some("PodCompleted".to_owned()), None)
    } else if containers_ready {
        (None, None)
    } else {
        (
            Some("ContainersNotReady".to_owned()),
            Some(format!("containers with unready status: [{unready}]")),
        )
    };
    out.push(Computed {
        type_: "ContainersReady",
        status: containers_ready && !completed,
        reason: cr_reason.clone(),
        message: cr_message.clone(),
    });

    let gate_failures = readiness_gate_failures(pod);
    let (ready, reason, message) = if completed || !containers_ready {
        (false, cr_reason, cr_message)
    } else if !gate_failures.is_empty() {
        (
            false,
            Some("ReadinessGatesNotReady".to_owned()),
            Some(gate_failures.join(", ")),
        )
    } else {
        (true, None, None)
    };
    out.push(Computed {
        type_: "Ready",
        status: ready,
        reason,
        message,
    });
    out
}

/// One message per readiness gate that is missing or not True, worded like the kubelet.
pub fn readiness_gate_failures(pod: &Pod) -> Vec<String> {
    let gates = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    gates
        .iter()
        .filter_map(|g| {
            let t = &g.condition_type;
            match conditions.iter().find(|c| &c.type_ == t) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate \"{t}\" does not exist."
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate \"{t}\" is not \"True\", but {}",
                    c.status
                )),
                Some(_) => None,
            }
        })
        .collect()
}

fn unready_names(cs: &[ContainerStatus], ok: impl Fn(&ContainerStatus) -> bool) -> String {
    cs.iter()
        .filter(|c| !ok(c))
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Full conditions: `lastTransitionTime` is kept from the current condition of the same type
/// (`current`: what this kubelet last wrote, else what the API server holds) while its status is
/// unchanged, and set to `now` when it flips.
pub fn with_timestamps(
    current: &[PodCondition],
    computed: &[Computed],
    now: Timestamp,
) -> Vec<PodCondition> {
    computed
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" }.to_owned();
            let last = current
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == status)
                .and_then(|p| p.last_transition_time.clone())
                .unwrap_or(Time(now));
            PodCondition {
                type_: c.type_.to_owned(),
                status,
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: Some(last),
                ..PodCondition::default()
            }
        })
        .collect()
}

/// The pod's conditions as stored in the API server.
pub fn pod_conditions(pod: &Pod) -> &[PodCondition] {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The strategic-merge patch body for `pods/status`: only fields this kubelet owns.
/// `current` is what [`with_timestamps`] compares with.
pub fn status_patch(pod: &Pod, current: &[PodCondition], obs: &Observed, now: Timestamp) -> Value {
    let mut conditions =
        serde_json::to_value(with_timestamps(current, &compute_conditions(pod, obs), now))
            .unwrap_or_default();
    // Conditions are merged by type: a reason or message that no longer applies (Ready turning
    // True) must be deleted explicitly, with null.
    for c in conditions.as_array_mut().into_iter().flatten() {
        for key in ["reason", "message"] {
            if c.get(key).is_none() {
                c[key] = Value::Null;
            }
        }
    }
    let mut status = json!({
        "phase": obs.phase.as_str(),
        "conditions": conditions,
        "hostIP": obs.host_ip,
        "hostIPs": [{"ip": obs.host_ip}],
        "containerStatuses": obs.containers,
        "initContainerStatuses": obs.init_containers,
    });
    if let Some(ip) = &obs.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
    }
    if let Some(t) = &obs.start_time {
        status["startTime"] = json!(t);
    }
    json!({ "status": status })
}

/// True when the pod's Ready condition is True (as stored in the API).
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodReadinessGate, PodSpec, PodStatus};

    const GATE: &str = "power.a3s.dev/attested";

    fn pod(gates: &[&str], conditions: &[(&str, &str)]) -> Pod {
        Pod {
            spec: Some(PodSpec {
                readiness_gates: Some(
                    gates
                        .iter()
                        .map(|g| PodReadinessGate {
                            condition_type: (*g).to_owned(),
                        })
                        .collect(),
                ),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| PodCondition {
                            type_: (*t).to_owned(),
                            status: (*s).to_owned(),
                            last_transition_time: Some(Time(Timestamp::UNIX_EPOCH)),
                            ..PodCondition::default()
                        })
                        .collect(),
                ),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn observed(ready: &[bool]) -> Observed {
        Observed {
            sandbox_ready: true,
            initialized: true,
            phase: Phase::Running,
            pod_ip: Some("10.244.0.2".into()),
            host_ip: "10.245.0.10".into(),
            start_time: None,
            init_containers: vec![],
            containers: ready
                .iter()
                .enumerate()
                .map(|(i, r)| ContainerStatus {
                    name: format!("c{i}"),
                    ready: *r,
                    ..ContainerStatus::default()
                })
                .collect(),
        }
    }

    fn cond<'a>(cs: &'a [Computed], t: &str) -> &'a Computed {
        cs.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn ready_needs_every_container() {
        let cs = compute_conditions(&pod(&[], &[]), &observed(&[true, false]));
        assert!(!cond(&cs, "ContainersReady").status);
        let ready = cond(&cs, "Ready");
        assert!(!ready.status);
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [c1]")
        );
        assert!(
            cond(
                &compute_conditions(&pod(&[], &[]), &observed(&[true])),
                "Ready"
            )
            .status
        );
    }

    #[test]
    fn ready_needs_every_gate_true() {
        let obs = observed(&[true]);
        let missing = compute_conditions(&pod(&[GATE], &[]), &obs);
        let r = cond(&missing, "Ready");
        assert!(!r.status);
        assert_eq!(r.reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert!(r.message.as_deref().unwrap().contains("does not exist"));
        assert!(cond(&missing, "ContainersReady").status);

        let falsy = compute_conditions(&pod(&[GATE], &[(GATE, "False")]), &obs);
        assert!(!cond(&falsy, "Ready").status);
        assert!(
            cond(&falsy, "Ready")
                .message
                .as_deref()
                .unwrap()
                .contains("is not \"True\", but False")
        );

        let truthy = compute_conditions(&pod(&[GATE], &[(GATE, "True")]), &obs);
        assert!(cond(&truthy, "Ready").status);
    }

    #[test]
    fn patch_never_contains_gate_conditions() {
        let p = pod(&[GATE], &[(GATE, "True")]);
        let patch = status_patch(
            &p,
            pod_conditions(&p),
            &observed(&[true]),
            Timestamp::UNIX_EPOCH,
        );
        let types: Vec<&str> = patch["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, OWNED_CONDITIONS);
        let ready = &patch["status"]["conditions"][3];
        assert_eq!(ready["status"], "True");
        // Explicit nulls delete a stale reason/message in the strategic merge.
        assert!(ready["reason"].is_null() && ready.get("reason").is_some());
        assert!(ready["message"].is_null() && ready.get("message").is_some());
        assert_eq!(patch["status"]["podIPs"][0]["ip"], "10.244.0.2");
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let p = pod(&[], &[("Ready", "False"), ("ContainersReady", "True")]);
        let cs = with_timestamps(
            pod_conditions(&p),
            &compute_conditions(&p, &observed(&[true])),
            now,
        );
        let get = |t: &str| cs.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(get("Ready").last_transition_time, Some(Time(now)));
        assert_eq!(
            get("ContainersReady").last_transition_time,
            Some(Time(Timestamp::UNIX_EPOCH))
        );
    }

    #[test]
    fn completed_pod_is_not_ready() {
        let mut obs = observed(&[false]);
        obs.phase = Phase::Succeeded;
        let cs = compute_conditions(&pod(&[], &[]), &obs);
        assert_eq!(cond(&cs, "Ready").reason.as_deref(), Some("PodCompleted"));
    }
}
