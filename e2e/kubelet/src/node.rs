//! Fake nodes: the Node object (labels by TEE type, allocatable, Ready), its Lease heartbeat, and
//! the RuntimeClasses that schedule confidential pods onto nodes of the right TEE type.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::warn;

use crate::config::{NodeArg, TeeType};
use crate::{FIELD_MANAGER, TEE_LABEL};

/// How often the Lease is renewed (the kubelet's default is 10 s of a 40 s lease).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;
/// How often Node status (conditions' heartbeat) is re-posted.
pub const STATUS_REPORT: Duration = Duration::from_secs(60);

fn apply() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// The InternalIP of the i-th node (on the test namespace's loopback device).
pub fn node_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 245, 0, 10 + index)
}

/// Creates or updates the Node object and its status.
pub async fn register(client: &Client, node: &NodeArg, index: u8) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let cidr = format!("10.244.{index}.0/24");
    let body = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/exclude-from-external-load-balancers": "true",
                TEE_LABEL: node.tee.label(),
            },
        },
        "spec": { "podCIDR": cidr, "podCIDRs": [cidr] },
    });
    api.patch(&node.name, &apply(), &Patch::Apply(&body))
        .await
        .with_context(|| format!("registering node {}", node.name))?;
    report_status(client, node, index).await
}

/// Posts the Node status: capacity, addresses, and Ready with a fresh heartbeat.
pub async fn report_status(client: &Client, node: &NodeArg, index: u8) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let now = Time(Timestamp::now());
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        })
    };
    let resources =
        json!({"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let body = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": node.name },
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "process kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": node_ip(index).to_string()},
                {"type": "Hostname", "address": node.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": "", "osImage": "process kubelet",
                "containerRuntimeVersion": "process://power-e2e-kubelet",
                "kubeletVersion": "v1.34.4", "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    });
    // lastTransitionTime only moves when a status flips: SSA keeps what we sent, and the
    // statuses never change while this kubelet runs, so keep the first one.
    let existing = api.get_status(&node.name).await?;
    let mut body = body;
    if let Some(conds) = existing.status.and_then(|s| s.conditions) {
        for c in body["status"]["conditions"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if let Some(old) = conds.iter().find(|o| {
                Some(o.type_.as_str()) == c["type"].as_str()
                    && Some(o.status.as_str()) == c["status"].as_str()
            }) && let Some(t) = &old.last_transition_time
            {
                c["lastTransitionTime"] = json!(t);
            }
        }
    }
    api.patch_status(&node.name, &apply(), &Patch::Apply(&body))
        .await
        .with_context(|| format!("posting status of node {}", node.name))?;
    Ok(())
}

/// Renews `kube-node-lease/<node>`.
pub async fn renew_lease(client: &Client, node: &str) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": node, "namespace": "kube-node-lease" },
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": MicroTime(Timestamp::now()),
        },
    });
    api.patch(node, &apply(), &Patch::Apply(&body))
        .await
        .with_context(|| format!("renewing lease of node {node}"))?;
    Ok(())
}

/// Lease renewals and periodic status reports until the task is aborted.
pub async fn heartbeat(client: Client, node: NodeArg, index: u8) {
    let mut since_status = Duration::ZERO;
    loop {
        if let Err(e) = renew_lease(&client, &node.name).await {
            warn!("{e:#}");
        }
        if since_status >= STATUS_REPORT {
            since_status = Duration::ZERO;
            if let Err(e) = report_status(&client, &node, index).await {
                warn!("{e:#}");
            }
        }
        tokio::time::sleep(LEASE_RENEW).await;
        since_status += LEASE_RENEW;
    }
}

/// `kata-qemu-snp` and `kata-qemu-tdx`, each scheduling onto nodes of its TEE type.
pub async fn ensure_runtime_classes(client: &Client) -> anyhow::Result<()> {
    let api: Api<RuntimeClass> = Api::all(client.clone());
    for tee in TeeType::ALL {
        let Some(name) = tee.runtime_class() else {
            continue;
        };
        let body = json!({
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": { "name": name },
            "handler": name,
            "scheduling": { "nodeSelector": { TEE_LABEL: tee.label() } },
        });
        api.patch(name, &apply(), &Patch::Apply(&body))
            .await
            .with_context(|| format!("applying RuntimeClass {name}"))?;
    }
    Ok(())
}
