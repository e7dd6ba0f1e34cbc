//! Reconcile tests against a mocked API server (`tower-test`): the fake serves the objects of a
//! scenario, echoes applies and records every request, so tests assert on what the reconciler
//! wrote (children, pod conditions, status, Events) and on the RBAC it needed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use kube::client::Body;
use kube::{Api, Client};
use power_attest::policy::Enforcement;
use power_attest::{Check, Policy, TeeKind, Verdict};
use power_crds::{AttestationPolicy, InferenceModel};
use serde_json::{Value, json};

use crate::children::Defaults;
use crate::context::{Context, Settings};
use crate::fixtures::*;
use crate::gate::{Attestor, Outcome, Target};

/// One request the reconciler made.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Value,
}

/// The objects of a scenario.
#[derive(Clone, Default)]
struct World {
    policy: Option<AttestationPolicy>,
    models: Vec<InferenceModel>,
    pods: Vec<Pod>,
    slices: Vec<EndpointSlice>,
    lease: Option<Lease>,
    /// The InferenceModel's Deployment exists already (answers GET).
    deployment: bool,
}

fn status_404() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

fn list(kind: &str, items: Value) -> Value {
    json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// Serve `world` until the client is dropped; returns the recorded requests.
fn serve(world: World) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            log.lock().unwrap().push(Seen {
                method: method.clone(),
                path: path.clone(),
                query,
                body: body.clone(),
            });
            let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let (code, reply) = match (method.as_str(), seg.as_slice()) {
                ("GET", [.., "attestationpolicies", _]) => match &world.policy {
                    Some(p) => (200, serde_json::to_value(p).unwrap()),
                    None => (404, status_404()),
                },
                ("GET", [.., "inferencemodels"]) => (
                    200,
                    list(
                        "InferenceModelList",
                        serde_json::to_value(&world.models).unwrap(),
                    ),
                ),
                ("GET", [.., "pods"]) => (
                    200,
                    list("PodList", serde_json::to_value(&world.pods).unwrap()),
                ),
                ("GET", [.., "endpointslices"]) => (
                    200,
                    list(
                        "EndpointSliceList",
                        serde_json::to_value(&world.slices).unwrap(),
                    ),
                ),
                ("GET", [.., "leases", _]) => match &world.lease {
                    Some(l) => (200, serde_json::to_value(l).unwrap()),
                    None => (404, status_404()),
                },
                ("GET", [.., "deployments", name]) if world.deployment => (
                    200,
                    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "generation": 1}}),
                ),
                ("GET", [.., "deployments", _]) => (404, status_404()),
                ("PATCH", [.., "deployments", _]) => {
                    let mut d = body.clone();
                    d["status"] = json!({"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "observedGeneration": 1});
                    d["metadata"]["generation"] = json!(1);
                    (200, d)
                }
                ("PATCH", [.., kind, name, "status"])
                    if *kind == "inferencemodels" || *kind == "attestationpolicies" =>
                {
                    let mut obj = if *kind == "inferencemodels" {
                        world
                            .models
                            .iter()
                            .find(|m| m.metadata.name.as_deref() == Some(*name))
                            .map(|m| serde_json::to_value(m).unwrap())
                    } else {
                        world
                            .policy
                            .as_ref()
                            .map(|p| serde_json::to_value(p).unwrap())
                    }
                    .unwrap_or_else(|| json!({"metadata": {"name": name}, "spec": {}}));
                    obj["status"] = body["status"].clone();
                    (200, obj)
                }
                ("PATCH", _) | ("POST", _) | ("PUT", _) => {
                    let mut obj = body.clone();
                    if obj.get("metadata").is_none() {
                        obj["metadata"] =
                            json!({"name": seg.last().copied().unwrap_or(""), "namespace": NS});
                    }
                    (200, obj)
                }
                _ => (404, status_404()),
            };
            let resp = Response::builder()
                .status(StatusCode::from_u16(code).unwrap())
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            send.send_response(resp);
        }
    });
    (Client::new(svc, NS), seen)
}

/// Returns a fixed verdict per pod.
type Verdicts = Box<dyn Fn(&Target, &Policy) -> Outcome + Send + Sync>;
struct FakeAttestor(Verdicts);

impl Attestor for FakeAttestor {
    fn attest(&self, t: Target, p: Policy) -> BoxFuture<'static, Outcome> {
        let o = (self.0)(&t, &p);
        Box::pin(async move { o })
    }
}

fn verdict(policy: &Policy, checks: Vec<Check>) -> Outcome {
    let passed = checks.iter().all(|c| !c.failed());
    Outcome::Verdict(Box::new(Verdict {
        tee: Some(TeeKind::Simulated),
        enforcement: policy.enforcement,
        passed,
        accepted: passed || policy.enforcement == Enforcement::Audit,
        matched_reference_set: passed.then(|| "dev".into()),
        measurement: Some(MEASUREMENT.into()),
        tcb_status: None,
        checks,
    }))
}

fn pass(p: &Policy) -> Outcome {
    verdict(
        p,
        vec![Check::pass(
            "refset[dev].simulated.measurement",
            "one of [ab..]",
            MEASUREMENT,
        )],
    )
}
fn wrong_measurement(p: &Policy) -> Outcome {
    verdict(
        p,
        vec![Check::fail(
            "refset[dev].simulated.measurement",
            format!("one of [{MEASUREMENT}]"),
            "cd".repeat(48),
        )],
    )
}
fn wrong_model(p: &Policy) -> Outcome {
    verdict(
        p,
        vec![Check::fail("reportData.model", DIGEST, "00".repeat(32))],
    )
}

fn ctx(client: Client, attestor: FakeAttestor) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        Arc::new(attestor),
        Settings {
            defaults: Defaults {
                runtime_image: "ghcr.io/a3s-lab/power:test".into(),
            },
            gate_concurrency: 4,
        },
        Some("test".into()),
    ))
}

/// `ctx` (its gate memory, attestor and settings) in front of another API server: the same
/// operator seeing the cluster again later.
fn with_client(ctx: &Arc<Context>, client: Client) -> Arc<Context> {
    Arc::new(Context {
        client: client.clone(),
        recorder: kube::runtime::events::Recorder::new(
            client,
            kube::runtime::events::Reporter {
                controller: "t".into(),
                instance: None,
            },
        ),
        ..(**ctx).clone()
    })
}

/// An attestor that passes every pod, and its call count.
fn counting_pass() -> (FakeAttestor, Arc<Mutex<usize>>) {
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    let attestor = FakeAttestor(Box::new(move |_, p| {
        *c.lock().unwrap() += 1;
        pass(p)
    }));
    (attestor, calls)
}

fn slice(ips: &[&str]) -> EndpointSlice {
    EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: ips
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn requests(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    seen.lock().unwrap().clone()
}

fn patches<'a>(seen: &'a [Seen], suffix: &str) -> Vec<&'a Seen> {
    seen.iter()
        .filter(|s| s.method == Method::PATCH && s.path.ends_with(suffix))
        .collect()
}

fn events(seen: &[Seen]) -> Vec<(String, String, String)> {
    seen.iter()
        .filter(|s| s.method == Method::POST && s.path.ends_with("/events"))
        .map(|s| {
            (
                s.body["type"].as_str().unwrap_or("").to_string(),
                s.body["reason"].as_str().unwrap_or("").to_string(),
                s.body["note"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn status_of(seen: &[Seen]) -> Value {
    patches(seen, "/inferencemodels/chat/status")
        .last()
        .map(|s| s.body["status"].clone())
        .unwrap_or(Value::Null)
}

fn condition(status: &Value, t: &str) -> (String, String) {
    let c = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .cloned()
        .unwrap_or(Value::Null);
    (
        c["status"].as_str().unwrap_or("").into(),
        c["reason"].as_str().unwrap_or("").into(),
    )
}

fn pod_condition(seen: &[Seen], pod: &str) -> Option<(String, String, String)> {
    patches(seen, &format!("/pods/{pod}/status"))
        .last()
        .map(|s| {
            let c = &s.body["status"]["conditions"][0];
            assert_eq!(c["type"], "power.a3s.dev/attested");
            (
                c["status"].as_str().unwrap().into(),
                c["reason"].as_str().unwrap().into(),
                c["message"].as_str().unwrap().into(),
            )
        })
}

/// Every request is allowed by the RBAC rules; returns (group, resource, verb) used.
fn rbac_used(seen: &[Seen]) -> BTreeSet<(String, String, String)> {
    let mut used = BTreeSet::new();
    for s in seen {
        let seg: Vec<&str> = s.path.trim_start_matches('/').split('/').collect();
        let (group, rest) = match seg.as_slice() {
            ["api", _v, rest @ ..] => ("", rest),
            ["apis", g, _v, rest @ ..] => (*g, rest),
            _ => panic!("unexpected path {}", s.path),
        };
        let rest = match rest {
            ["namespaces", _, rest @ ..] => rest,
            r => r,
        };
        let (resource, named) = match rest {
            [r] => (r.to_string(), false),
            [r, _] => (r.to_string(), true),
            [r, _, sub] => (format!("{r}/{sub}"), true),
            _ => panic!("unexpected path {}", s.path),
        };
        let verb = match (s.method.as_str(), named, s.query.contains("watch=true")) {
            ("GET", true, _) => "get",
            ("GET", false, true) => "watch",
            ("GET", false, false) => "list",
            ("POST", _, _) => "create",
            ("PATCH", _, _) => "patch",
            ("PUT", _, _) => "update",
            (m, _, _) => panic!("unexpected method {m}"),
        };
        let rules: Vec<_> = crate::rbac::RULES
            .iter()
            .chain(crate::rbac::LEADER_RULES)
            .copied()
            .collect();
        assert!(
            crate::rbac::allows(&rules, group, &resource, verb),
            "RBAC lacks {verb} {group}/{resource}"
        );
        used.insert((group.to_string(), resource.clone(), verb.to_string()));
        // SSA of an object that does not exist yet creates it: needs create as well.
        let manager = s
            .query
            .split('&')
            .find_map(|kv| kv.strip_prefix("fieldManager="));
        if s.method == Method::PATCH
            && manager == Some(crate::children::MANAGER)
            && !resource.contains('/')
        {
            assert!(
                crate::rbac::allows(&rules, group, &resource, "create"),
                "apply needs create on {resource}"
            );
            used.insert((group.to_string(), resource.clone(), "create".into()));
        }
    }
    used
}

fn world(pods: Vec<Pod>, slices: Vec<EndpointSlice>) -> World {
    World {
        policy: Some(policy("sim")),
        models: vec![model("chat")],
        pods,
        slices,
        lease: None,
        deployment: false,
    }
}

#[tokio::test]
async fn create_applies_children_and_reports_awaiting_attestation() {
    let (client, seen) = serve(world(vec![], vec![]));
    let ctx = ctx(client, FakeAttestor(Box::new(|_, p| pass(p))));
    crate::inference_model::reconcile(Arc::new(model("chat")), ctx)
        .await
        .expect("reconcile");
    let seen = requests(&seen);
    for (kind, path) in [
        ("ConfigMap", "/configmaps/chat"),
        ("Deployment", "/deployments/chat"),
        ("Service", "/services/chat"),
    ] {
        let p = patches(&seen, path);
        assert_eq!(p.len(), 1, "{kind} applied once");
        assert!(
            p[0].query.contains("fieldManager=a3s-power-operator")
                && p[0].query.contains("force=true"),
            "{}",
            p[0].query
        );
        assert_eq!(p[0].body["kind"], kind);
        assert_eq!(
            p[0].body["metadata"]["ownerReferences"][0]["kind"],
            "InferenceModel"
        );
    }
    let dep = &patches(&seen, "/deployments/chat")[0].body;
    assert_eq!(
        dep["spec"]["template"]["spec"]["readinessGates"][0]["conditionType"],
        "power.a3s.dev/attested"
    );
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["env"][1]["name"],
        "A3S_TEE_SIMULATE"
    );
    let status = status_of(&seen);
    assert_eq!(
        condition(&status, "Ready"),
        ("False".into(), "AwaitingAttestation".into())
    );
    assert_eq!(
        condition(&status, "PolicyResolved"),
        ("True".into(), "PolicyResolved".into())
    );
    assert_eq!(status["url"], "http://chat.ml.svc:80/v1");
    assert_eq!(
        status["selector"],
        "app.kubernetes.io/instance=chat,app.kubernetes.io/name=a3s-power,power.a3s.dev/model=chat"
    );
    assert!(events(&seen).is_empty(), "no decision, no Event");
    rbac_used(&seen);
}

#[tokio::test]
async fn gate_pass_admits_pods_and_ready_follows_endpoints() {
    let pods = vec![
        pod("chat-a", "10.244.1.2").ready(),
        pod("chat-b", "10.244.1.3").ready(),
    ];
    let (client, seen) = serve(world(pods, vec![slice(&["10.244.1.2", "10.244.1.3"])]));
    let targets = Arc::new(Mutex::new(Vec::new()));
    let t2 = targets.clone();
    let ctx = ctx(
        client,
        FakeAttestor(Box::new(move |t, p| {
            t2.lock().unwrap().push(t.clone());
            pass(p)
        })),
    );
    let action = crate::inference_model::reconcile(Arc::new(model("chat")), ctx.clone())
        .await
        .expect("reconcile");
    let seen = requests(&seen);
    let mut urls: Vec<_> = targets
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.url.clone())
        .collect();
    urls.sort();
    assert_eq!(
        urls,
        ["https://10.244.1.2:11443", "https://10.244.1.3:11443"]
    );
    for p in ["chat-a", "chat-b"] {
        let (s, r, _) = pod_condition(&seen, p).expect("condition written");
        assert_eq!((s.as_str(), r.as_str()), ("True", "AttestationSucceeded"));
        let patch = patches(&seen, &format!("/pods/{p}/status"))[0];
        assert!(
            patch.query.contains("fieldManager=a3s-power-operator-gate"),
            "{}",
            patch.query
        );
    }
    let status = status_of(&seen);
    assert_eq!(
        condition(&status, "Ready"),
        ("True".into(), "Serving".into())
    );
    assert_eq!(
        condition(&status, "Attested"),
        ("True".into(), "AttestationSucceeded".into())
    );
    assert_eq!(
        condition(&status, "ModelVerified"),
        ("True".into(), "ModelDigestBound".into())
    );
    assert_eq!(status["attestedReplicas"], 2);
    assert_eq!(status["attestation"]["teeType"], "simulated");
    let ev = events(&seen);
    assert_eq!(
        ev.iter().filter(|e| e.1 == "PodAdmittedToService").count(),
        2,
        "{ev:?}"
    );
    assert_eq!(
        ev.iter().filter(|e| e.1 == "AttestationSucceeded").count(),
        2,
        "{ev:?}"
    );
    assert!(ev.iter().any(|e| e.1 == "ModelDigestBound"));
    assert!(
        format!("{action:?}").contains("300s"),
        "re-attest after the interval: {action:?}"
    );
    // The metrics saw two verified simulated attestations.
    assert!(
        ctx.metrics
            .render()
            .contains("a3s_power_attestations_total{result=\"verified\",tee=\"simulated\"} 2")
    );
}

#[tokio::test]
async fn gate_fail_keeps_pods_out_with_the_reason() {
    let (client, seen) = serve(world(vec![pod("chat-a", "10.244.1.2").ready()], vec![]));
    let ctx = ctx(client, FakeAttestor(Box::new(|_, p| wrong_measurement(p))));
    crate::inference_model::reconcile(Arc::new(model("chat")), ctx)
        .await
        .expect("reconcile");
    let seen = requests(&seen);
    let (s, r, m) = pod_condition(&seen, "chat-a").expect("condition");
    assert_eq!((s.as_str(), r.as_str()), ("False", "MeasurementMismatch"));
    assert!(
        m.contains(MEASUREMENT) && m.contains(&"cd".repeat(48)),
        "expected vs actual: {m}"
    );
    let status = status_of(&seen);
    assert_eq!(
        condition(&status, "Ready"),
        ("False".into(), "MeasurementMismatch".into())
    );
    assert_eq!(
        condition(&status, "Degraded"),
        ("True".into(), "MeasurementMismatch".into())
    );
    assert_eq!(status["attestedReplicas"], 0);
    assert_eq!(status["attestation"]["recentFailures"][0]["pod"], "chat-a");
    let ev = events(&seen);
    assert!(
        ev.iter()
            .any(|e| e.0 == "Warning" && e.1 == "MeasurementMismatch" && e.2.contains("chat-a")),
        "{ev:?}"
    );
    assert!(!ev.iter().any(|e| e.1 == "PodAdmittedToService"));
}

#[tokio::test]
async fn audit_mode_admits_with_a_warning() {
    let mut w = world(
        vec![pod("chat-a", "10.244.1.2").ready()],
        vec![slice(&["10.244.1.2"])],
    );
    w.policy = Some(policy("sim").audit());
    let (client, seen) = serve(w);
    let ctx = ctx(client, FakeAttestor(Box::new(|_, p| wrong_measurement(p))));
    crate::inference_model::reconcile(Arc::new(model("chat")), ctx)
        .await
        .expect("reconcile");
    let seen = requests(&seen);
    assert_eq!(
        pod_condition(&seen, "chat-a").map(|c| c.0),
        Some("True".into())
    );
    let ev = events(&seen);
    assert!(
        ev.iter()
            .any(|e| e.0 == "Warning" && e.1 == "MeasurementMismatch" && e.2.contains("Audit")),
        "{ev:?}"
    );
    assert!(ev.iter().any(|e| e.1 == "PodAdmittedToService"));
    assert_eq!(
        condition(&status_of(&seen), "Attested"),
        ("True".into(), "AuditOnly".into())
    );
}

#[tokio::test]
async fn model_digest_mismatch_is_reported_as_model_verification() {
    let (client, seen) = serve(world(vec![pod("chat-a", "10.244.1.2").ready()], vec![]));
    let ctx = ctx(client, FakeAttestor(Box::new(|_, p| wrong_model(p))));
    crate::inference_model::reconcile(Arc::new(model("chat")), ctx)
        .await
        .expect("reconcile");
    let seen = requests(&seen);
    let status = status_of(&seen);
    assert_eq!(
        condition(&status, "ModelVerified"),
        ("False".into(), "ModelDigestMismatch".into())
    );
    assert_eq!(
        condition(&status, "Ready"),
        ("False".into(), "ModelDigestMismatch".into())
    );
    assert!(
        events(&seen)
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "ModelDigestMismatch")
    );
}

#[tokio::test]
async fn policy_change_reattests_and_evicts() {
    // First pass under generation 1, then the policy changes (generation 2) to refuse the pod.
    let admitted = pod("chat-a", "10.244.1.2").ready();
    let (client, _) = serve(world(vec![admitted.clone()], vec![slice(&["10.244.1.2"])]));
    let calls = Arc::new(Mutex::new(0));
    let c2 = calls.clone();
    let ctx1 = ctx(
        client,
        FakeAttestor(Box::new(move |_, p| {
            *c2.lock().unwrap() += 1;
            if p.enforcement == Enforcement::Enforce && *c2.lock().unwrap() > 1 {
                wrong_measurement(p)
            } else {
                pass(p)
            }
        })),
    );
    crate::inference_model::reconcile(Arc::new(model("chat")), ctx1.clone())
        .await
        .expect("first");
    // Unchanged policy generation: not due again.
    let (client, seen) = serve(world(
        vec![admitted.clone().condition("power.a3s.dev/attested", "True")],
        vec![],
    ));
    let ctx2 = with_client(&ctx1, client);
    crate::inference_model::reconcile(Arc::new(model("chat")), ctx2.clone())
        .await
        .expect("second");
    assert_eq!(
        *calls.lock().unwrap(),
        1,
        "not re-attested before the interval"
    );
    assert!(pod_condition(&requests(&seen), "chat-a").is_none());
    // The policy's generation changes: re-attested at once, and removed from the Service.
    let mut w = world(
        vec![admitted.condition("power.a3s.dev/attested", "True")],
        vec![],
    );
    w.policy = Some(policy("sim").generation(2));
    let (client, seen) = serve(w);
    let ctx3 = with_client(&ctx1, client);
    crate::inference_model::reconcile(Arc::new(model("chat")), ctx3)
        .await
        .expect("third");
    let seen = requests(&seen);
    assert_eq!(*calls.lock().unwrap(), 2);
    assert_eq!(
        pod_condition(&seen, "chat-a").map(|c| c.0),
        Some("False".into())
    );
    assert!(
        events(&seen).iter().any(|e| e.1 == "PodRemovedFromService"),
        "{:?}",
        events(&seen)
    );
}

#[tokio::test]
async fn restarted_containers_are_attested_again_before_the_interval() {
    let (attestor, calls) = counting_pass();
    let first = pod("chat-a", "10.244.1.2")
        .ready()
        .container("runtime", 0, "process://7");
    let (client, _) = serve(world(vec![first.clone()], vec![slice(&["10.244.1.2"])]));
    let ctx1 = ctx(client, attestor);
    crate::inference_model::reconcile(Arc::new(model("chat")), ctx1.clone())
        .await
        .expect("first");
    assert_eq!(*calls.lock().unwrap(), 1);
    // The same containers: not due before the interval.
    let (client, _) = serve(world(
        vec![first.condition("power.a3s.dev/attested", "True")],
        vec![],
    ));
    crate::inference_model::reconcile(Arc::new(model("chat")), with_client(&ctx1, client))
        .await
        .expect("second");
    assert_eq!(*calls.lock().unwrap(), 1, "not due yet");
    // The runtime container was restarted (new process): attested again at once.
    let restarted = pod("chat-a", "10.244.1.2")
        .ready()
        .container("runtime", 1, "process://9")
        .condition("power.a3s.dev/attested", "True");
    let (client, _) = serve(world(vec![restarted], vec![]));
    crate::inference_model::reconcile(Arc::new(model("chat")), with_client(&ctx1, client))
        .await
        .expect("third");
    assert_eq!(*calls.lock().unwrap(), 2, "restart makes the pod due");
}

#[tokio::test]
async fn not_ready_pod_leaves_the_service_and_is_attested_before_it_returns() {
    let (attestor, calls) = counting_pass();
    let admitted = pod("chat-a", "10.244.1.2")
        .ready()
        .container("runtime", 0, "process://7");
    let (client, _) = serve(world(vec![admitted.clone()], vec![slice(&["10.244.1.2"])]));
    let ctx1 = ctx(client, attestor);
    crate::inference_model::reconcile(Arc::new(model("chat")), ctx1.clone())
        .await
        .expect("first");
    assert_eq!(*calls.lock().unwrap(), 1);
    // Containers not ready (failing probes), the gate condition still True: it goes False
    // now, without an attestation (there is nothing to attest).
    let not_ready = pod("chat-a", "10.244.1.2")
        .container("runtime", 0, "process://7")
        .condition("power.a3s.dev/attested", "True");
    let (client, seen) = serve(world(vec![not_ready], vec![]));
    crate::inference_model::reconcile(Arc::new(model("chat")), with_client(&ctx1, client))
        .await
        .expect("second");
    let seen = requests(&seen);
    assert_eq!(*calls.lock().unwrap(), 1);
    let (status, reason, _) = pod_condition(&seen, "chat-a").expect("condition written");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ContainersNotReady")
    );
    assert!(
        events(&seen).iter().any(|e| e.1 == "PodRemovedFromService"),
        "{:?}",
        events(&seen)
    );
    // Ready again, same containers, well within the interval: attested before it returns.
    let ready_again = admitted.condition("power.a3s.dev/attested", "False");
    let (client, seen) = serve(world(vec![ready_again], vec![]));
    crate::inference_model::reconcile(Arc::new(model("chat")), with_client(&ctx1, client))
        .await
        .expect("third");
    assert_eq!(*calls.lock().unwrap(), 2, "attested again");
    assert_eq!(
        pod_condition(&requests(&seen), "chat-a").map(|c| c.0),
        Some("True".into())
    );
}

#[tokio::test]
async fn missing_policy_takes_admitted_pods_out() {
    let mut w = world(
        vec![
            pod("chat-a", "10.244.1.2")
                .ready()
                .condition("power.a3s.dev/attested", "True"),
        ],
        vec![],
    );
    w.policy = None;
    w.deployment = true;
    let (client, seen) = serve(w);
    let ctx = ctx(client, FakeAttestor(Box::new(|_, p| pass(p))));
    crate::inference_model::reconcile(Arc::new(model("chat")), ctx)
        .await
        .expect("reconcile");
    let seen = requests(&seen);
    assert_eq!(
        pod_condition(&seen, "chat-a").map(|c| (c.0, c.1)),
        Some(("False".into(), "PolicyNotFound".into()))
    );
    // The existing Deployment is kept (applied as before), not deleted or restarted.
    assert_eq!(patches(&seen, "/deployments/chat").len(), 1);
    assert_eq!(
        condition(&status_of(&seen), "Ready"),
        ("False".into(), "PolicyNotFound".into())
    );
    assert!(events(&seen).iter().any(|e| e.1 == "PolicyNotFound"));
}

#[tokio::test]
async fn missing_policy_creates_no_pods() {
    let mut w = world(vec![], vec![]);
    w.policy = None;
    let (client, seen) = serve(w);
    let ctx = ctx(client, FakeAttestor(Box::new(|_, p| pass(p))));
    crate::inference_model::reconcile(Arc::new(model("chat")), ctx)
        .await
        .expect("reconcile");
    let seen = requests(&seen);
    for path in ["/configmaps/chat", "/deployments/chat", "/services/chat"] {
        assert!(
            patches(&seen, path).is_empty(),
            "{path} applied without a policy"
        );
    }
    assert_eq!(
        condition(&status_of(&seen), "Ready"),
        ("False".into(), "PolicyNotFound".into())
    );
}

#[tokio::test]
async fn model_change_rolls_the_pods() {
    let (client, seen) = serve(world(vec![], vec![]));
    let ctx = ctx(client, FakeAttestor(Box::new(|_, p| pass(p))));
    crate::inference_model::reconcile(Arc::new(model("chat")), ctx.clone())
        .await
        .expect("first");
    crate::inference_model::reconcile(Arc::new(model("chat").with_digest(&"1".repeat(64))), ctx)
        .await
        .expect("second");
    let seen = requests(&seen);
    let deps = patches(&seen, "/deployments/chat");
    let ann = |i: usize| deps[i].body["spec"]["template"]["metadata"]["annotations"].clone();
    assert_ne!(
        ann(0)["power.a3s.dev/config-hash"],
        ann(1)["power.a3s.dev/config-hash"]
    );
    assert_eq!(ann(1)["power.a3s.dev/model-sha256"], "1".repeat(64));
    assert_eq!(
        deps[1].body["spec"]["strategy"]["rollingUpdate"],
        json!({"maxSurge": 1, "maxUnavailable": 0})
    );
}

#[tokio::test]
async fn deletion_writes_nothing() {
    let (client, seen) = serve(world(vec![], vec![]));
    let ctx = ctx(client, FakeAttestor(Box::new(|_, p| pass(p))));
    let action = crate::inference_model::reconcile(Arc::new(model("chat").deleting()), ctx)
        .await
        .expect("reconcile");
    assert!(
        requests(&seen).is_empty(),
        "children are garbage-collected by ownerReferences"
    );
    assert_eq!(
        format!("{action:?}"),
        format!("{:?}", kube::runtime::controller::Action::await_change())
    );
}

#[tokio::test]
async fn unchanged_status_is_not_patched() {
    let (client, seen) = serve(world(vec![], vec![]));
    let ctx = ctx(client, FakeAttestor(Box::new(|_, p| pass(p))));
    crate::inference_model::reconcile(Arc::new(model("chat")), ctx.clone())
        .await
        .expect("first");
    let status: power_crds::InferenceModelStatus =
        serde_json::from_value(status_of(&requests(&seen))).expect("status");
    let mut again = model("chat");
    again.status = Some(status);
    let before = patches(&requests(&seen), "/status").len();
    crate::inference_model::reconcile(Arc::new(again), ctx)
        .await
        .expect("second");
    assert_eq!(patches(&requests(&seen), "/status").len(), before);
}

#[tokio::test]
async fn policy_status_counts_models_and_pods() {
    let mut w = world(vec![], vec![]);
    w.models = vec![
        model("chat"),
        model("other").with_policy("elsewhere"),
        model("chat2"),
    ];
    let (client, seen) = serve(w);
    let ctx = ctx(client, FakeAttestor(Box::new(|_, p| pass(p))));
    crate::attestation_policy::reconcile(Arc::new(policy("sim")), ctx)
        .await
        .expect("reconcile");
    let seen = requests(&seen);
    let st = &patches(&seen, "/attestationpolicies/sim/status")[0].body["status"];
    assert_eq!(st["boundModels"], 2);
    assert_eq!(
        condition(st, "Valid"),
        ("True".into(), "PolicyValid".into())
    );
    assert_eq!(st["policyDigest"].as_str().map(str::len), Some(64));
    rbac_used(&seen);
}

#[tokio::test]
async fn leader_election_creates_then_respects_a_live_holder() {
    use crate::leader::{Held, LeaseConfig, try_acquire};
    let cfg = LeaseConfig {
        name: "a3s-power-operator".into(),
        namespace: NS.into(),
        identity: "me".into(),
        duration: std::time::Duration::from_secs(15),
    };
    let (client, seen) = serve(World::default());
    assert_eq!(
        try_acquire(&Api::<Lease>::namespaced(client, NS), &cfg)
            .await
            .expect("acquire"),
        Held::Leader
    );
    assert!(
        requests(&seen)
            .iter()
            .any(|s| s.method == Method::POST && s.path.ends_with("/leases"))
    );
    rbac_used(&requests(&seen));
    let mut lease: Lease =
        serde_json::from_value(requests(&seen).last().unwrap().body.clone()).unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("other".into());
    let (client, seen) = serve(World {
        lease: Some(lease.clone()),
        ..Default::default()
    });
    assert_eq!(
        try_acquire(&Api::<Lease>::namespaced(client, NS), &cfg)
            .await
            .expect("acquire"),
        Held::Follower("other".into())
    );
    // Expired: taken over with a PUT (update).
    lease.spec.as_mut().unwrap().renew_time =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::from_second(1).unwrap(),
        ));
    let (client, seen2) = serve(World {
        lease: Some(lease),
        ..Default::default()
    });
    assert_eq!(
        try_acquire(&Api::<Lease>::namespaced(client, NS), &cfg)
            .await
            .expect("acquire"),
        Held::Leader
    );
    assert!(requests(&seen2).iter().any(|s| s.method == Method::PUT));
    rbac_used(&requests(&seen));
    rbac_used(&requests(&seen2));
}

/// The RBAC rules are exactly what the reconcilers and leader election use: every rule's every
/// verb is exercised by some scenario (watches come from the controller wiring).
#[tokio::test]
async fn rbac_rules_are_exactly_what_is_used() {
    let mut used = BTreeSet::new();
    let mut no_policy = world(vec![], vec![]);
    no_policy.policy = None;
    for w in [
        world(
            vec![pod("chat-a", "10.244.1.2").ready()],
            vec![slice(&["10.244.1.2"])],
        ),
        no_policy,
    ] {
        let (client, seen) = serve(w);
        let c = ctx(client, FakeAttestor(Box::new(|_, p| pass(p))));
        crate::inference_model::reconcile(Arc::new(model("chat")), c.clone())
            .await
            .expect("im");
        crate::attestation_policy::reconcile(Arc::new(policy("sim")), c.clone())
            .await
            .expect("pol");
        // A repeated Event extends its series with a patch.
        let ev = kube::runtime::events::Event {
            type_: kube::runtime::events::EventType::Normal,
            reason: "R".into(),
            note: None,
            action: "A".into(),
            secondary: None,
        };
        for _ in 0..2 {
            c.recorder
                .publish(&ev, &crate::inference_model::reference(&model("chat")))
                .await
                .expect("event");
        }
        used.extend(rbac_used(&requests(&seen)));
    }
    let cfg = crate::leader::LeaseConfig {
        name: "l".into(),
        namespace: NS.into(),
        identity: "me".into(),
        duration: std::time::Duration::from_secs(15),
    };
    for lease in [
        None,
        Some(Lease {
            metadata: kube::api::ObjectMeta {
                name: Some("l".into()),
                ..Default::default()
            },
            spec: Some(Default::default()),
        }),
    ] {
        let (client, seen) = serve(World {
            lease,
            ..Default::default()
        });
        crate::leader::try_acquire(&Api::namespaced(client, NS), &cfg)
            .await
            .expect("lease");
        used.extend(rbac_used(&requests(&seen)));
    }
    // The controllers' watches (list + watch) on every watched kind.
    for (g, r) in [
        ("power.a3s.dev", "inferencemodels"),
        ("power.a3s.dev", "attestationpolicies"),
        ("apps", "deployments"),
        ("", "services"),
        ("", "configmaps"),
        ("", "pods"),
        ("discovery.k8s.io", "endpointslices"),
    ] {
        used.insert((g.into(), r.into(), "list".into()));
        used.insert((g.into(), r.into(), "watch".into()));
    }
    // Not a request: the API server checks it when ownerReferences set blockOwnerDeletion.
    used.insert((
        "power.a3s.dev".into(),
        "inferencemodels/finalizers".into(),
        "update".into(),
    ));
    let granted: BTreeSet<(String, String, String)> = crate::rbac::RULES
        .iter()
        .chain(crate::rbac::LEADER_RULES)
        .flat_map(|r| {
            r.resources.iter().flat_map(move |res| {
                r.verbs
                    .iter()
                    .map(move |v| (r.group.to_string(), res.to_string(), v.to_string()))
            })
        })
        .collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "RBAC grants what the operator never uses: {unused:?}"
    );
}

/// The chart renders its rules from this file; it must equal [`crate::rbac`].
#[test]
fn chart_rbac_file_matches_the_operator() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/a3s-power-operator/files/rbac-rules.yaml"
    );
    let text = std::fs::read_to_string(path).expect("chart rules file");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    let norm = |rules: &serde_yaml::Value| -> BTreeSet<(String, String, String)> {
        rules
            .as_sequence()
            .expect("list of rules")
            .iter()
            .flat_map(|r| {
                let gs: Vec<String> = r["apiGroups"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|g| g.as_str().unwrap().to_string())
                    .collect();
                let rs: Vec<String> = r["resources"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|g| g.as_str().unwrap().to_string())
                    .collect();
                let vs: Vec<String> = r["verbs"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|g| g.as_str().unwrap().to_string())
                    .collect();
                gs.iter()
                    .flat_map(|g| {
                        rs.iter()
                            .flat_map(|r| {
                                vs.iter()
                                    .map(|v| (g.clone(), r.clone(), v.clone()))
                                    .collect::<Vec<_>>()
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let from_rules = |rules: &[crate::rbac::Rule]| -> BTreeSet<(String, String, String)> {
        rules
            .iter()
            .flat_map(|r| {
                r.resources.iter().flat_map(move |res| {
                    r.verbs
                        .iter()
                        .map(move |v| (r.group.to_string(), res.to_string(), v.to_string()))
                })
            })
            .collect()
    };
    assert_eq!(
        norm(&doc["rules"]),
        from_rules(crate::rbac::RULES),
        "charts/.../files/rbac-rules.yaml `rules`"
    );
    assert_eq!(
        norm(&doc["leaderElectionRules"]),
        from_rules(crate::rbac::LEADER_RULES),
        "`leaderElectionRules`"
    );
}
