//! Proof of the e2e machinery against the real control plane and the process kubelet.
//!
//! These tests need the cluster started by `e2e/with-cluster.sh` (KUBECONFIG, pod network,
//! image `e2e.local/python` mapped to a python3): run them with `e2e/run-machinery-tests.sh`.
//! Each test works in its own namespace.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IMAGE: &str = "e2e.local/python:3";
const GATE: &str = "e2e.a3s.dev/gate";
const TIMEOUT: Duration = Duration::from_secs(90);

/// A small HTTP server run as the containers of these tests. `/info` reports what the pod sees:
/// its downward-API env, the namespace file and the API server's version fetched in-cluster
/// with the projected ServiceAccount token and CA (so volumes, env and pod networking all work).
const SERVER_PY: &str = r#"
import http.server, json, os, pathlib, ssl, urllib.error, urllib.request
SA = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok"
        elif self.path.startswith("/fetch/"):
            # Pod-to-pod traffic: GET another pod's /healthz from this pod's network namespace.
            body = urllib.request.urlopen("http://%s:8080/healthz" % self.path[len("/fetch/"):], timeout=5).read()
        elif self.path == "/info":
            ctx = ssl.create_default_context(cafile=str(SA / "ca.crt"))
            url = "https://%s:%s/version" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
            req = urllib.request.Request(url, headers={"Authorization": "Bearer " + (SA / "token").read_text()})
            version = json.load(urllib.request.urlopen(req, context=ctx, timeout=5))["gitVersion"]
            # RBAC applies to the pod's ServiceAccount: the default one may not list pods.
            ns = (SA / "namespace").read_text()
            req = urllib.request.Request(url.replace("/version", "/api/v1/namespaces/%s/pods" % ns), headers=req.headers)
            try:
                pods_status = urllib.request.urlopen(req, context=ctx, timeout=5).status
            except urllib.error.HTTPError as e:
                pods_status = e.code
            body = json.dumps({
                "pod": os.environ["POD_NAME"], "podIP": os.environ["POD_IP"],
                "namespace": (SA / "namespace").read_text(), "apiVersion": version,
                "greeting": open("greeting.txt").read(), "cwd": os.getcwd(), "home": os.environ["HOME"], "listPods": pods_status,
            }).encode()
        else:
            self.send_response(404); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"#;

async fn client() -> anyhow::Result<Client> {
    Client::try_default()
        .await
        .context("no cluster: run these tests through e2e/run-machinery-tests.sh")
}

fn obj<K: DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).expect("test object matches its type")
}

/// A fresh namespace with its default ServiceAccount (made by the controller-manager).
async fn namespace(c: &Client, prefix: &str) -> anyhow::Result<String> {
    let suffix = std::process::id() % 10_000 * 100
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_millis()
            % 100;
    let name = format!("{prefix}-{suffix}");
    Api::<Namespace>::all(c.clone())
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": name}})),
        )
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    let sa: Api<ServiceAccount> = Api::namespaced(c.clone(), &name);
    poll("default ServiceAccount", TIMEOUT, || async {
        Ok(sa.get_opt("default").await?.map(|_| ()))
    })
    .await?;
    Ok(name)
}

/// Polls `f` every 200 ms until it returns Some; the error names `what` and the last error.
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last = String::from("condition not met");
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET over plain HTTP/1.1: (status, body).
async fn http_get(ip: &str, port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let fut = async {
        let mut s = TcpStream::connect((ip, port)).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await?;
        let status = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("malformed response")?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .with_context(|| format!("GET http://{ip}:{port}{path} timed out"))?
        .with_context(|| format!("GET http://{ip}:{port}{path}"))
}

fn web_config_map() -> ConfigMap {
    obj(json!({
        "metadata": {"name": "web"},
        "data": {"server.py": SERVER_PY, "greeting.txt": "hello from a config map"},
    }))
}

/// The web server container; mounts the ConfigMap at a path that does not exist on the machine.
fn web_container() -> Value {
    let field = |p: &str| json!({"fieldRef": {"fieldPath": p}});
    json!({
        "name": "web",
        "image": IMAGE,
        "command": ["python3", "/opt/e2e-web/server.py"],
        "workingDir": "/opt/e2e-web",
        "env": [
            {"name": "POD_NAME", "valueFrom": field("metadata.name")},
            {"name": "POD_IP", "valueFrom": field("status.podIP")},
        ],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 2},
        "volumeMounts": [{"name": "web", "mountPath": "/opt/e2e-web", "readOnly": true}],
    })
}

fn web_pod_spec() -> Value {
    json!({
        "containers": [web_container()],
        "volumes": [{"name": "web", "configMap": {"name": "web"}}],
        "terminationGracePeriodSeconds": 5,
    })
}

fn deployment(name: &str, replicas: i32, mut pod_spec: Value) -> Deployment {
    pod_spec["containers"][0]["name"] = json!("web");
    obj(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }))
}

fn service(name: &str) -> Service {
    obj(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": "http"}]},
    }))
}

async fn create<K>(api: &Api<K>, o: &K) -> anyhow::Result<K>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), o)
        .await
        .with_context(|| format!("creating {:?}", o.meta().name))
}

async fn wait_deployment_ready(api: &Api<Deployment>, name: &str, n: i32) -> anyhow::Result<()> {
    poll(
        &format!("deployment {name} to have {n} ready replicas"),
        TIMEOUT,
        || async {
            let d = api.get(name).await?;
            let s = d.status.unwrap_or_default();
            Ok((s.ready_replicas == Some(n) && s.available_replicas == Some(n)).then_some(()))
        },
    )
    .await
}

async fn pods(c: &Client, ns: &str, app: &str) -> anyhow::Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(c.clone(), ns);
    Ok(api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items)
}

fn pod_ip(p: &Pod) -> Option<String> {
    p.status.as_ref().and_then(|s| s.pod_ip.clone())
}

fn condition<'a>(p: &'a Pod, t: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == t))
}

/// (address, ready) of every endpoint in the Service's EndpointSlices.
async fn endpoints(c: &Client, ns: &str, svc: &str) -> anyhow::Result<Vec<(String, bool)>> {
    let api: Api<EndpointSlice> = Api::namespaced(c.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
    let mut out = Vec::new();
    for s in api.list(&lp).await?.items {
        for e in s.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready) == Some(true);
            for a in e.addresses {
                out.push((a, ready));
            }
        }
    }
    out.sort();
    Ok(out)
}

async fn ready_endpoints(c: &Client, ns: &str, svc: &str) -> anyhow::Result<BTreeSet<String>> {
    Ok(endpoints(c, ns, svc)
        .await?
        .into_iter()
        .filter(|(_, r)| *r)
        .map(|(a, _)| a)
        .collect())
}

async fn delete_namespace(c: &Client, ns: &str) -> anyhow::Result<()> {
    Api::<Namespace>::all(c.clone())
        .delete(ns, &DeleteParams::default())
        .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs the e2e cluster: run e2e/run-machinery-tests.sh"]
async fn deployment_becomes_ready_and_serves_through_its_endpoint_slice() -> anyhow::Result<()> {
    let c = client().await?;
    let ns = namespace(&c, "web").await?;
    create(&Api::namespaced(c.clone(), &ns), &web_config_map()).await?;
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), &ns);
    create(&deploys, &deployment("web", 2, web_pod_spec())).await?;
    create(&Api::namespaced(c.clone(), &ns), &service("web")).await?;
    wait_deployment_ready(&deploys, "web", 2).await?;

    let pods = pods(&c, &ns, "web").await?;
    ensure!(pods.len() == 2, "expected 2 pods, found {}", pods.len());
    let mut ips = BTreeSet::new();
    for p in &pods {
        let ip = pod_ip(p).context("ready pod without IP")?;
        let parsed: Ipv4Addr = ip.parse()?;
        ensure!(
            parsed.octets()[..2] == [10, 244],
            "pod IP {ip} not in 10.244.0.0/16"
        );
        ensure!(condition(p, "Ready").map(|c| c.status.as_str()) == Some("True"));
        ips.insert(ip);
    }
    ensure!(ips.len() == 2, "pods share an IP: {ips:?}");

    let slice_ips = poll(
        "EndpointSlice to list both pods as ready",
        TIMEOUT,
        || async {
            let ready = ready_endpoints(&c, &ns, "web").await?;
            Ok((ready == ips).then_some(ready))
        },
    )
    .await?;

    for ip in &slice_ips {
        let (status, body) = http_get(ip, 8080, "/info").await?;
        ensure!(status == 200, "GET /info on {ip}: {status} {body}");
        let info: Value = serde_json::from_str(&body).with_context(|| format!("body {body:?}"))?;
        let pod = pods
            .iter()
            .find(|p| pod_ip(p).as_deref() == Some(ip))
            .context("endpoint without pod")?;
        ensure!(info["pod"] == json!(pod.metadata.name), "{info}");
        ensure!(info["podIP"] == json!(ip), "{info}");
        ensure!(info["namespace"] == json!(ns), "{info}");
        ensure!(info["apiVersion"] == json!("v1.34.4"), "{info}");
        ensure!(
            info["listPods"] == json!(403),
            "RBAC not enforced on the pod's token: {info}"
        );
        ensure!(
            info["greeting"] == json!("hello from a config map"),
            "{info}"
        );
        ensure!(info["cwd"] == json!("/opt/e2e-web"), "{info}");
        let home = info["home"].as_str().unwrap_or_default();
        ensure!(
            home.contains("/pods/") && home.ends_with("/home-web"),
            "HOME not private: {info}"
        );
    }
    let ips: Vec<&String> = slice_ips.iter().collect();
    for (from, to) in [(ips[0], ips[1]), (ips[1], ips[0])] {
        let (status, body) = http_get(from, 8080, &format!("/fetch/{to}")).await?;
        ensure!(
            status == 200 && body == "ok",
            "pod {from} → pod {to}: {status} {body}"
        );
    }
    ensure!(
        !std::path::Path::new("/opt/e2e-web").exists(),
        "the kubelet created the mount path on the machine instead of in the pod"
    );
    delete_namespace(&c, &ns).await
}

#[tokio::test]
#[ignore = "needs the e2e cluster: run e2e/run-machinery-tests.sh"]
async fn readiness_gate_keeps_a_pod_out_of_the_endpoint_slice_until_true() -> anyhow::Result<()> {
    let c = client().await?;
    let ns = namespace(&c, "gate").await?;
    create(&Api::namespaced(c.clone(), &ns), &web_config_map()).await?;
    create(&Api::namespaced(c.clone(), &ns), &service("gated")).await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    let mut spec = web_pod_spec();
    spec["readinessGates"] = json!([{"conditionType": GATE}]);
    create(
        &pods,
        &obj(json!({"metadata": {"name": "gated", "labels": {"app": "gated"}}, "spec": spec})),
    )
    .await?;

    let p = poll("containers ready, pod not ready", TIMEOUT, || async {
        let p = pods.get("gated").await?;
        let cr = condition(&p, "ContainersReady").map(|c| c.status.clone());
        Ok((cr.as_deref() == Some("True")).then_some(p))
    })
    .await?;
    let ready = condition(&p, "Ready").context("no Ready condition")?;
    ensure!(ready.status == "False", "Ready without the gate: {ready:?}");
    ensure!(
        ready.reason.as_deref() == Some("ReadinessGatesNotReady"),
        "{ready:?}"
    );
    let ip = pod_ip(&p).context("no pod IP")?;
    poll(
        "EndpointSlice to list the pod as not ready",
        TIMEOUT,
        || async {
            let eps = endpoints(&c, &ns, "gated").await?;
            Ok(eps.contains(&(ip.clone(), false)).then_some(()))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        ready_endpoints(&c, &ns, "gated").await?.is_empty(),
        "gated pod became a ready endpoint"
    );
    let container_id = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.first())
            .map(|c| (c.container_id.clone(), c.restart_count))
    };
    let before = container_id(&p);

    // What the operator does: its own condition, through pods/status.
    let set_gate = |status: &'static str| {
        let pods = pods.clone();
        async move {
            let patch = json!({"status": {"conditions": [{
                "type": GATE, "status": status, "reason": "E2ETest",
                "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now()),
            }]}});
            pods.patch_status("gated", &PatchParams::default(), &Patch::Strategic(&patch))
                .await
                .context("patching the gate condition")
        }
    };
    for (gate, want_ready) in [("True", true), ("False", false), ("True", true)] {
        set_gate(gate).await?;
        let what = format!("Ready={want_ready} after gate {gate}");
        let p = poll(&what, TIMEOUT, || async {
            let p = pods.get("gated").await?;
            let ready = condition(&p, "Ready").map(|c| c.status == "True");
            Ok((ready == Some(want_ready)).then_some(p))
        })
        .await?;
        let ready = condition(&p, "Ready").context("no Ready condition")?;
        let want_reason = (!want_ready).then_some("ReadinessGatesNotReady");
        ensure!(
            ready.reason.as_deref() == want_reason,
            "stale or wrong reason: {ready:?}"
        );
        poll(&format!("endpoint ready={want_ready}"), TIMEOUT, || async {
            let eps = endpoints(&c, &ns, "gated").await?;
            Ok(eps.contains(&(ip.clone(), want_ready)).then_some(()))
        })
        .await?;
        // The kubelet's own status writes never touch the gate.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let p = pods.get("gated").await?;
        let g = condition(&p, GATE).context("gate condition vanished")?;
        ensure!(
            g.status == gate && g.reason.as_deref() == Some("E2ETest"),
            "gate rewritten: {g:?}"
        );
        ensure!(
            container_id(&p) == before,
            "container restarted: {:?} → {:?}",
            before,
            container_id(&p)
        );
        if want_ready {
            let (status, _) = http_get(&ip, 8080, "/healthz").await?;
            ensure!(status == 200);
        }
    }
    delete_namespace(&c, &ns).await
}

#[tokio::test]
#[ignore = "needs the e2e cluster: run e2e/run-machinery-tests.sh"]
async fn runtime_class_places_pods_only_on_nodes_of_its_tee() -> anyhow::Result<()> {
    let c = client().await?;
    let ns = namespace(&c, "rtc").await?;
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), &ns);
    let sleeper = |rc: Option<&str>, selector: Option<Value>| {
        let mut spec = json!({
            "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "3600"]}],
            "terminationGracePeriodSeconds": 1,
        });
        if let Some(rc) = rc {
            spec["runtimeClassName"] = json!(rc);
        }
        if let Some(s) = selector {
            spec["nodeSelector"] = s;
        }
        spec
    };
    create(
        &deploys,
        &deployment("snp", 3, sleeper(Some("kata-qemu-snp"), None)),
    )
    .await?;
    create(
        &deploys,
        &deployment("tdx", 2, sleeper(Some("kata-qemu-tdx"), None)),
    )
    .await?;
    // Pinned to the TDX node by hostname: the SNP RuntimeClass's selector cannot be met there.
    let pinned = sleeper(
        Some("kata-qemu-snp"),
        Some(json!({"kubernetes.io/hostname": "tdx-0"})),
    );
    create(&deploys, &deployment("pinned", 1, pinned)).await?;
    wait_deployment_ready(&deploys, "snp", 3).await?;
    wait_deployment_ready(&deploys, "tdx", 2).await?;

    let nodes: Api<Node> = Api::all(c.clone());
    for (app, tee) in [("snp", "sev-snp"), ("tdx", "tdx")] {
        for p in pods(&c, &ns, app).await? {
            let spec = p.spec.as_ref().context("pod without spec")?;
            let node_name = spec.node_name.clone().context("unscheduled")?;
            let node = nodes.get(&node_name).await?;
            let label = node
                .metadata
                .labels
                .unwrap_or_default()
                .get("power.a3s.dev/tee")
                .cloned();
            ensure!(
                label.as_deref() == Some(tee),
                "{app} pod on node {node_name} with tee {label:?}"
            );
            // The RuntimeClass admission plugin added the class's node selector.
            let sel = spec.node_selector.clone().unwrap_or_default();
            ensure!(
                sel.get("power.a3s.dev/tee").map(String::as_str) == Some(tee),
                "{sel:?}"
            );
        }
    }
    let pods_api: Api<Pod> = Api::namespaced(c.clone(), &ns);
    let pinned = poll("the pinned pod to be created", TIMEOUT, || async {
        Ok(pods(&c, &ns, "pinned").await?.into_iter().next())
    })
    .await?;
    let name = pinned.metadata.name.clone().unwrap_or_default();
    poll(
        "the pinned pod to be reported unschedulable",
        TIMEOUT,
        || async {
            let p = pods_api.get(&name).await?;
            ensure!(
                p.spec.as_ref().and_then(|s| s.node_name.clone()).is_none(),
                "pinned pod scheduled"
            );
            let unschedulable = condition(&p, "PodScheduled").is_some_and(|s| {
                s.status == "False" && s.reason.as_deref() == Some("Unschedulable")
            });
            Ok(unschedulable.then_some(()))
        },
    )
    .await?;
    // A direct contradiction is refused by the RuntimeClass admission plugin.
    let conflict: Pod = obj(json!({
        "metadata": {"name": "conflict"},
        "spec": sleeper(Some("kata-qemu-snp"), Some(json!({"power.a3s.dev/tee": "tdx"}))),
    }));
    match pods_api.create(&PostParams::default(), &conflict).await {
        Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("conflict") => {}
        other => bail!("conflicting pod not refused by admission: {other:?}"),
    }
    delete_namespace(&c, &ns).await
}

#[tokio::test]
#[ignore = "needs the e2e cluster: run e2e/run-machinery-tests.sh"]
async fn deleting_a_deployment_garbage_collects_everything() -> anyhow::Result<()> {
    let c = client().await?;
    let ns = namespace(&c, "gc").await?;
    create(&Api::namespaced(c.clone(), &ns), &web_config_map()).await?;
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), &ns);
    create(&deploys, &deployment("gc", 2, web_pod_spec())).await?;
    let services: Api<Service> = Api::namespaced(c.clone(), &ns);
    create(&services, &service("gc")).await?;
    wait_deployment_ready(&deploys, "gc", 2).await?;
    let ips = poll("2 ready endpoints", TIMEOUT, || async {
        let r = ready_endpoints(&c, &ns, "gc").await?;
        Ok((r.len() == 2).then_some(r))
    })
    .await?;
    for ip in &ips {
        ensure!(http_get(ip, 8080, "/healthz").await?.0 == 200);
    }

    let started = Instant::now();
    deploys.delete("gc", &DeleteParams::background()).await?;
    let rs: Api<ReplicaSet> = Api::namespaced(c.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(c.clone(), &ns);
    poll(
        "ReplicaSets and Pods to be garbage-collected",
        TIMEOUT,
        || async {
            let r = rs.list(&ListParams::default()).await?.items.len();
            let p = pods_api.list(&ListParams::default()).await?.items.len();
            Ok((r == 0 && p == 0).then_some(()))
        },
    )
    .await?;
    let gc_time = started.elapsed();
    ensure!(
        endpoints(&c, &ns, "gc").await?.is_empty(),
        "endpoints left after the pods went"
    );
    for ip in &ips {
        ensure!(
            http_get(ip, 8080, "/healthz").await.is_err(),
            "{ip} still serves after deletion"
        );
    }
    // The Service owns its EndpointSlices.
    services.delete("gc", &DeleteParams::background()).await?;
    let slices: Api<EndpointSlice> = Api::namespaced(c.clone(), &ns);
    poll(
        "EndpointSlices to be garbage-collected",
        TIMEOUT,
        || async {
            Ok(slices
                .list(&ListParams::default())
                .await?
                .items
                .is_empty()
                .then_some(()))
        },
    )
    .await?;
    eprintln!("deployment deletion → pods gone in {gc_time:?}");
    delete_namespace(&c, &ns).await
}

#[tokio::test]
#[ignore = "needs the e2e cluster: run e2e/run-machinery-tests.sh"]
async fn crashing_containers_restart_and_deletion_honours_the_grace_period() -> anyhow::Result<()> {
    let c = client().await?;
    let ns = namespace(&c, "life").await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    let pod = |name: &str, script: &str, grace: i64| -> Pod {
        obj(json!({
            "metadata": {"name": name},
            "spec": {
                "containers": [{"name": "main", "image": IMAGE, "command": ["sh", "-c", script]}],
                "terminationGracePeriodSeconds": grace,
            },
        }))
    };
    create(&pods, &pod("crash", "echo boom; exit 3", 1)).await?;
    // Ignores SIGTERM (and so does its sleep): only SIGKILL after the grace period stops it.
    create(
        &pods,
        &pod("stubborn", "trap '' TERM; sleep 3600 & wait; sleep 3600", 3),
    )
    .await?;

    // Nothing listens on 8080: the readiness probe keeps the pod unready.
    let mut unready = pod("unready", "sleep 3600", 1);
    unready.spec.as_mut().context("spec")?.containers[0].readiness_probe = Some(obj(
        json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1}),
    ));
    create(&pods, &unready).await?;
    // Nothing listens either: the liveness probe gets the container restarted.
    let mut unlive = pod("unlive", "sleep 3600", 1);
    unlive.spec.as_mut().context("spec")?.containers[0].liveness_probe = Some(obj(
        json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 2}),
    ));
    create(&pods, &unlive).await?;

    poll("crash to be restarted twice", TIMEOUT, || async {
        let p = pods.get("crash").await?;
        let cs = p
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default();
        let Some(s) = cs.first() else { return Ok(None) };
        let last = s.last_state.as_ref().and_then(|l| l.terminated.as_ref());
        Ok((s.restart_count >= 2 && last.is_some_and(|t| t.exit_code == 3)).then_some(()))
    })
    .await?;

    let p = pods.get("unready").await?;
    ensure!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
        "{:?}",
        p.status
    );
    let ready = condition(&p, "Ready").context("no Ready condition")?;
    ensure!(
        ready.status == "False" && ready.reason.as_deref() == Some("ContainersNotReady"),
        "pod with a failing readiness probe: {ready:?}"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), &ns);
    poll(
        "an Unhealthy event for the unready pod",
        TIMEOUT,
        || async {
            let found = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some("Unhealthy")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("unready")
                        && e.note
                            .as_deref()
                            .is_some_and(|n| n.starts_with("Readiness probe failed"))
                });
            Ok(found.then_some(()))
        },
    )
    .await?;

    poll(
        "unlive to be restarted by its liveness probe",
        TIMEOUT,
        || async {
            let p = pods.get("unlive").await?;
            let cs = p
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default();
            let restarted = cs.first().is_some_and(|s| s.restart_count >= 1);
            let killing = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some("Killing")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("unlive")
                });
            Ok((restarted && killing).then_some(()))
        },
    )
    .await?;

    poll("stubborn to run", TIMEOUT, || async {
        let p = pods.get("stubborn").await?;
        Ok((p.status.and_then(|s| s.phase).as_deref() == Some("Running")).then_some(()))
    })
    .await?;
    let started = Instant::now();
    pods.delete("stubborn", &DeleteParams::default()).await?;
    poll("stubborn to be removed", TIMEOUT, || async {
        Ok(pods.get_opt("stubborn").await?.is_none().then_some(()))
    })
    .await?;
    let took = started.elapsed();
    ensure!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(20),
        "SIGTERM-ignoring pod removed after {took:?}; expected the 3s grace period, then SIGKILL"
    );
    delete_namespace(&c, &ns).await
}

#[tokio::test]
#[ignore = "needs the e2e cluster: run e2e/run-machinery-tests.sh"]
async fn helm_installs_and_uninstalls_a_chart() -> anyhow::Result<()> {
    let c = client().await?;
    let ns = namespace(&c, "helm").await?;
    let dir = std::env::temp_dir().join(format!("e2e-chart-{ns}"));
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates)?;
    std::fs::write(
        dir.join("Chart.yaml"),
        "apiVersion: v2\nname: e2e-trivial\nversion: 0.1.0\nkubeVersion: \">=1.34.0-0\"\n",
    )?;
    std::fs::write(dir.join("values.yaml"), "replicas: 1\n")?;
    let cm = serde_json::to_string(&web_config_map())?;
    std::fs::write(templates.join("configmap.yaml"), cm)?;
    let d = serde_json::to_string(&deployment("web", 1, web_pod_spec()))?
        .replace("\"replicas\":1", "\"replicas\":{{ .Values.replicas }}");
    std::fs::write(templates.join("deployment.yaml"), d)?;

    let helm = |args: &[&str]| {
        let out = std::process::Command::new("helm")
            .args(args)
            .args(["--namespace", &ns])
            .output()
            .context("running helm (E2E_BIN_DIR on PATH)")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(out.status.success(), "helm {args:?} failed: {text}");
        anyhow::Ok(text)
    };
    let chart = dir.to_string_lossy().into_owned();
    let set = "replicas=2";
    helm(&[
        "install",
        "trivial",
        &chart,
        "--set",
        set,
        "--wait",
        "--timeout",
        "90s",
    ])?;
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), &ns);
    let d = deploys.get("web").await?;
    ensure!(
        d.status.and_then(|s| s.ready_replicas) == Some(2),
        "helm --wait returned before ready"
    );
    let list = helm(&["list", "--output", "json"])?;
    ensure!(list.contains("\"status\":\"deployed\""), "{list}");
    helm(&["uninstall", "trivial", "--wait", "--timeout", "90s"])?;
    poll("chart objects to be removed", TIMEOUT, || async {
        let cms: Api<ConfigMap> = Api::namespaced(c.clone(), &ns);
        let gone = deploys.get_opt("web").await?.is_none() && cms.get_opt("web").await?.is_none();
        Ok(gone.then_some(()))
    })
    .await?;
    std::fs::remove_dir_all(&dir)?;
    delete_namespace(&c, &ns).await
}

#[tokio::test]
#[ignore = "needs the e2e cluster: run e2e/run-machinery-tests.sh"]
async fn https_readiness_probe_against_a_secret_mounted_certificate() -> anyhow::Result<()> {
    let c = client().await?;
    let ns = namespace(&c, "tls").await?;
    let dir = std::env::temp_dir().join(format!("e2e-tls-{ns}"));
    std::fs::create_dir_all(&dir)?;
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-subj", "/CN=e2e", "-days", "1", "-keyout"])
        .arg(dir.join("tls.key"))
        .arg("-out")
        .arg(dir.join("tls.crt"))
        .output()
        .context("running openssl")?;
    ensure!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(dir.join(f));
    let secret: k8s_openapi::api::core::v1::Secret = obj(json!({
        "metadata": {"name": "tls"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": read("tls.crt")?, "tls.key": read("tls.key")?},
    }));
    create(&Api::namespaced(c.clone(), &ns), &secret).await?;
    std::fs::remove_dir_all(&dir)?;
    let script = r#"
import http.server, ssl
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
s = http.server.ThreadingHTTPServer(("0.0.0.0", 8443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/etc/e2e-tls/tls.crt", "/etc/e2e-tls/tls.key")
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    let pod: Pod = obj(json!({
        "metadata": {"name": "tls"},
        "spec": {
            "containers": [{
                "name": "tls", "image": IMAGE, "command": ["python3", "-c", script],
                "ports": [{"name": "https", "containerPort": 8443}],
                "readinessProbe": {
                    "httpGet": {"scheme": "HTTPS", "path": "/healthz", "port": "https"},
                    "periodSeconds": 1,
                },
                "volumeMounts": [{"name": "tls", "mountPath": "/etc/e2e-tls", "readOnly": true}],
            }],
            "volumes": [{"name": "tls", "secret": {"secretName": "tls", "defaultMode": 0o400}}],
            "terminationGracePeriodSeconds": 1,
        },
    }));
    create(&pods, &pod).await?;
    poll("the HTTPS-probed pod to be Ready", TIMEOUT, || async {
        let p = pods.get("tls").await?;
        Ok((condition(&p, "Ready").map(|c| c.status.as_str()) == Some("True")).then_some(()))
    })
    .await?;
    delete_namespace(&c, &ns).await
}
