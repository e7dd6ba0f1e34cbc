//! A process kubelet for end-to-end tests against a real Kubernetes control plane.
//!
//! It registers fake nodes labelled by TEE type, and runs every pod bound to them as local
//! processes: each pod gets a sandbox (its own network namespace joined to the test's network
//! namespace by a veth pair, with an IP from 10.244.0.0/16) and each container its own mount
//! namespace in which the pod's volumes appear at their mount paths. It reports pod status the way
//! the kubelet does (containers ready AND every readiness gate True) and patches only the
//! conditions it owns. It must run inside a private network namespace (see `e2e/cluster.sh`): it
//! adds addresses, links and routes there.
//!
//! What it does not do: images (an image is mapped to a local executable), resource limits,
//! `kubectl logs/exec` (container logs are files in the run folder), ConfigMap/Secret volume
//! updates after start, Service ClusterIPs other than the `kubernetes` one.

pub mod config;
pub mod env;
pub mod kubelet;
pub mod mounts;
pub mod node;
pub mod pod;
pub mod probe;
pub mod sandbox;
pub mod status;
pub mod volumes;

/// Field manager and event reporter name of this kubelet.
pub const FIELD_MANAGER: &str = "power-e2e-kubelet";

/// Node label carrying the TEE type of a fake node.
pub const TEE_LABEL: &str = "power.a3s.dev/tee";
