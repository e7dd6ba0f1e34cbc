//! Prometheus metrics of the operator. Labels carry TEE kinds, results and object kinds, never
//! names of Secrets or anything from a request.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The operator's metrics, registered in their own registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// `a3s_power_attestations_total{result,tee}`; result: verified, failed, audit, error.
    pub attestations: IntCounterVec,
    /// `a3s_power_attestation_duration_seconds{tee}`: handshake + fetch + verification.
    pub attestation_duration: HistogramVec,
    /// `a3s_power_reconciliations_total{kind}`.
    pub reconciliations: IntCounterVec,
    /// `a3s_power_reconcile_errors_total{kind,error}`.
    pub reconcile_errors: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let attestations = IntCounterVec::new(
            Opts::new(
                "a3s_power_attestations_total",
                "Pod attestations by result and TEE",
            ),
            &["result", "tee"],
        )
        .expect("valid metric");
        let attestation_duration = HistogramVec::new(
            HistogramOpts::new(
                "a3s_power_attestation_duration_seconds",
                "Time to attest one pod: RA-TLS handshake, evidence fetch and verification",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["tee"],
        )
        .expect("valid metric");
        let reconciliations = IntCounterVec::new(
            Opts::new("a3s_power_reconciliations_total", "Reconciliations by kind"),
            &["kind"],
        )
        .expect("valid metric");
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "a3s_power_reconcile_errors_total",
                "Failed reconciliations by kind and error",
            ),
            &["kind", "error"],
        )
        .expect("valid metric");
        for c in [&attestations, &reconciliations, &reconcile_errors] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(attestation_duration.clone()))
            .expect("unique metric");
        Metrics {
            registry,
            attestations,
            attestation_duration,
            reconciliations,
            reconcile_errors,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
