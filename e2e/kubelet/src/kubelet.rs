//! The kubelet loop: registers the nodes, keeps their leases, and runs one worker per pod bound
//! to them, fed from a watch of all pods.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::FIELD_MANAGER;
use crate::config::{KubeletConfig, NodeArg};
use crate::node;
use crate::pod::{self, NodeContext, Shared};
use crate::sandbox;

struct WorkerHandle {
    tx: watch::Sender<Option<Pod>>,
    task: JoinHandle<()>,
}

/// The `kubernetes` Service's ClusterIP and port, once the API server has created it.
pub async fn kubernetes_service(client: &Client) -> anyhow::Result<(String, i32)> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    for _ in 0..100 {
        if let Some(svc) = api.get_opt("kubernetes").await? {
            let spec = svc.spec.context("service default/kubernetes has no spec")?;
            let ip = spec
                .cluster_ip
                .context("service default/kubernetes has no clusterIP")?;
            let port = spec
                .ports
                .and_then(|p| p.first().map(|p| p.port))
                .context("service default/kubernetes has no port")?;
            return Ok((ip, port));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("service default/kubernetes did not appear within 10s")
}

/// Runs until `shutdown` resolves; then kills every pod's processes.
pub async fn run(
    client: Client,
    nodes: Vec<NodeArg>,
    mut cfg: KubeletConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if cfg.kubernetes_service.is_none() {
        cfg.kubernetes_service = Some(kubernetes_service(&client).await?);
    }
    node::ensure_runtime_classes(&client).await?;
    let mut contexts: BTreeMap<String, Arc<NodeContext>> = BTreeMap::new();
    let mut heartbeats = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let index = u8::try_from(i).context("at most 255 nodes")?;
        let ip = node::node_ip(index);
        // The node's InternalIP exists in the test namespace, like a host's address.
        if let Err(e) =
            sandbox::run("ip", &["addr", "replace", &format!("{ip}/32"), "dev", "lo"]).await
        {
            warn!("adding node address {ip}: {e:#}");
        }
        node::register(&client, n, index).await?;
        heartbeats.push(tokio::spawn(node::heartbeat(
            client.clone(),
            n.clone(),
            index,
        )));
        contexts.insert(
            n.name.clone(),
            Arc::new(NodeContext {
                name: n.name.clone(),
                index,
                ip,
                ips_in_use: Mutex::new(BTreeSet::new()),
                handlers: n.tee.runtime_class().into_iter().collect(),
            }),
        );
        info!(node = %n.name, tee = n.tee.label(), %ip, "node registered");
    }
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: None,
        },
    );
    let shared = Shared {
        client: client.clone(),
        cfg: Arc::new(cfg),
        recorder,
    };

    let pods: Api<Pod> = Api::all(client.clone());
    let mut stream = watcher(pods, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut workers: BTreeMap<String, WorkerHandle> = BTreeMap::new();
    let mut seen: Option<BTreeSet<String>> = None;
    // Pods whose worker has finished (deleted, or being deleted): not to be started again by the
    // events that follow their deletion.
    let mut done: BTreeSet<String> = BTreeSet::new();
    tokio::pin!(shutdown);
    loop {
        let ev = tokio::select! {
            _ = &mut shutdown => break,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { break };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                warn!("pod watch: {e}");
                continue;
            }
        };
        match ev {
            watcher::Event::Init => seen = Some(BTreeSet::new()),
            watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                let Some(node) = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .and_then(|n| contexts.get(n))
                else {
                    continue;
                };
                let uid = p.metadata.uid.clone().unwrap_or_default();
                if let Some(s) = seen.as_mut() {
                    s.insert(uid.clone());
                }
                workers.retain(|uid, w| {
                    let finished = w.task.is_finished();
                    if finished {
                        done.insert(uid.clone());
                    }
                    !finished
                });
                if done.contains(&uid) {
                    continue;
                }
                match workers.get(&uid) {
                    Some(w) => {
                        let _ = w.tx.send(Some(p));
                    }
                    None => {
                        let (tx, rx) = watch::channel(Some(p));
                        let task = tokio::spawn(pod::run(shared.clone(), node.clone(), rx));
                        workers.insert(uid, WorkerHandle { tx, task });
                    }
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = seen.take() {
                    for (uid, w) in &workers {
                        if !seen.contains(uid) {
                            let _ = w.tx.send(None);
                        }
                    }
                }
            }
            watcher::Event::Delete(p) => {
                if let Some(uid) = p.metadata.uid.as_ref() {
                    done.remove(uid);
                    if let Some(w) = workers.get(uid) {
                        let _ = w.tx.send(None);
                    }
                }
            }
        }
    }
    info!("shutting down: stopping {} pods", workers.len());
    for h in heartbeats {
        h.abort();
    }
    for w in workers.values() {
        let _ = w.tx.send(None);
    }
    for (_, w) in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w.task).await;
    }
    Ok(())
}
