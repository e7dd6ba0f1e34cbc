//! # power-operator
//!
//! Reconciles `InferenceModel` and `AttestationPolicy` (crate `power-crds`): server-side applied
//! children owned by each InferenceModel, an attestation gate that admits a pod to its Service
//! only after `power-attest` verified its fresh evidence, status and Events computed from what is
//! observed, leader election, metrics and health endpoints. The binary is `a3s-power-operator`.
//! The operator never reads Secrets.

pub mod attestation_policy;
pub mod children;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod error;
pub mod gate;
pub mod inference_model;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod runtime_config;

#[cfg(test)]
pub(crate) mod fixtures;

pub use context::{Context, Settings};
pub use error::{Error, Result};

#[cfg(test)]
mod tests;
