//! What every reconcile shares: the client, the event recorder, metrics, the gate's memory and
//! the attestor.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::children::Defaults;
use crate::gate::{Attestor, GateState};
use crate::metrics::Metrics;

/// Operator settings (from the command line).
#[derive(Debug, Clone)]
pub struct Settings {
    pub defaults: Defaults,
    /// Pods attested at once per InferenceModel.
    pub gate_concurrency: usize,
}

/// Shared reconcile context.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub gate: GateState,
    pub attestor: Arc<dyn Attestor>,
    pub settings: Settings,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        attestor: Arc<dyn Attestor>,
        settings: Settings,
        instance: Option<String>,
    ) -> Context {
        let reporter = Reporter {
            controller: crate::children::MANAGER.into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: Metrics::new(),
            gate: GateState::default(),
            attestor,
            settings,
        }
    }
}

/// Requeue when nothing else triggers a reconcile.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Requeue while pods are starting or unreachable.
pub const SOON: Duration = Duration::from_secs(5);
