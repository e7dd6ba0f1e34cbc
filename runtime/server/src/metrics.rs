//! Prometheus metrics. Labels carry route templates, model names the operator registered, and
//! outcomes — never request content. Names follow Prometheus conventions so that
//! `promtool check metrics` passes.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// All metrics of one server.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub inference_requests: IntCounterVec,
    pub ttft: Histogram,
    pub decode_tps: Histogram,
    pub prompt_tokens: IntCounter,
    pub completion_tokens: IntCounter,
    pub queue_depth: IntGauge,
    pub active_sequences: IntGauge,
    pub loaded_models: IntGauge,
    pub model_loads: IntCounterVec,
    pub pulls: IntCounterVec,
    pub model_verifications: IntCounterVec,
    pub model_decryptions: IntCounterVec,
    pub attestations: IntCounterVec,
    pub log_redactions: IntCounter,
    pub rate_limited: IntCounterVec,
    pub audit_events: IntCounter,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are constants; a failure here is a programming error caught by tests.
    #[allow(clippy::expect_used)]
    r.expect("static metric definition")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("a3s_power".into()), None).unwrap_or_default();
        let r = &registry;
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(r.register(Box::new(c.clone())));
            c
        };
        let counter = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            must(r.register(Box::new(c.clone())));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = must(IntGauge::new(name, help));
            must(r.register(Box::new(g.clone())));
            g
        };
        let http_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route (streams: until the last byte is queued).",
            ),
            &["route"],
        ));
        must(r.register(Box::new(http_duration.clone())));
        let ttft = must(Histogram::with_opts(
            HistogramOpts::new(
                "time_to_first_token_seconds",
                "Time from request admission to the first generated token.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        ));
        must(r.register(Box::new(ttft.clone())));
        let decode_tps = must(Histogram::with_opts(
            HistogramOpts::new("decode_tokens_per_second", "Per-request decode throughput.")
                .buckets(vec![
                    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
                ]),
        ));
        must(r.register(Box::new(decode_tps.clone())));
        Metrics {
            http_requests: counter_vec(
                "http_requests_total",
                "HTTP requests by method, route and status.",
                &["method", "route", "status"],
            ),
            http_duration,
            inference_requests: counter_vec(
                "inference_requests_total",
                "Inference requests by endpoint and finish reason.",
                &["endpoint", "finish_reason"],
            ),
            ttft,
            decode_tps,
            prompt_tokens: counter(
                "prompt_tokens_total",
                "Prompt tokens processed (rounded when suppress_token_metrics).",
            ),
            completion_tokens: counter(
                "completion_tokens_total",
                "Tokens generated (rounded when suppress_token_metrics).",
            ),
            queue_depth: gauge(
                "queue_depth",
                "Requests admitted and waiting for an engine slot.",
            ),
            active_sequences: gauge("active_sequences", "Sequences in the running batch."),
            loaded_models: gauge("loaded_models", "Models loaded in memory."),
            model_loads: counter_vec(
                "model_loads_total",
                "Model loads and unloads by event.",
                &["event"],
            ),
            pulls: counter_vec("pulls_total", "Model pulls by result.", &["result"]),
            model_verifications: counter_vec(
                "model_verifications_total",
                "Model integrity checks (SHA-256 pin, Ed25519 signature) by result.",
                &["result"],
            ),
            model_decryptions: counter_vec(
                "model_decryptions_total",
                "Encrypted model decryptions by result.",
                &["result"],
            ),
            attestations: counter_vec(
                "attestations_total",
                "Attestation evidence produced, by kind and result.",
                &["kind", "result"],
            ),
            log_redactions: counter("log_redactions_total", "Values redacted from log lines."),
            rate_limited: counter_vec(
                "rate_limited_total",
                "Requests refused with 429, by reason.",
                &["reason"],
            ),
            audit_events: counter("audit_events_total", "Audit events recorded."),
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_prefix() {
        let m = Metrics::new();
        m.http_requests
            .with_label_values(&["GET", "/health", "200"])
            .inc();
        m.pulls.with_label_values(&["success"]).inc();
        m.attestations.with_label_values(&["simulated", "ok"]).inc();
        m.model_verifications.with_label_values(&["ok"]).inc();
        m.model_decryptions.with_label_values(&["ok"]).inc();
        m.inference_requests
            .with_label_values(&["chat", "stop"])
            .inc();
        m.http_duration
            .with_label_values(&["/health"])
            .observe(0.01);
        m.rate_limited.with_label_values(&["rate"]).inc();
        m.model_loads.with_label_values(&["load"]).inc();
        let t = m.render();
        for name in [
            "a3s_power_http_requests_total",
            "a3s_power_http_request_duration_seconds_bucket",
            "a3s_power_time_to_first_token_seconds_bucket",
            "a3s_power_queue_depth",
            "a3s_power_loaded_models",
            "a3s_power_pulls_total",
            "a3s_power_model_verifications_total",
            "a3s_power_model_decryptions_total",
            "a3s_power_attestations_total",
            "a3s_power_log_redactions_total",
            "a3s_power_completion_tokens_total",
        ] {
            assert!(t.contains(name), "{name} missing from\n{t}");
        }
    }
}
