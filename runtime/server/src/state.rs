//! Shared state of one server: configuration, store, loaded models, pulls in flight, limits,
//! metrics, audit and the attestation provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use power_attest::attester::Attester;
use tokio::sync::Semaphore;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::error::Result;
use crate::lifecycle::ModelPool;
use crate::metrics::Metrics;
use crate::pull::PullRegistry;
use crate::store::Store;

/// A token bucket (`rate_limit_rps`), burst = max(1, rps).
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate: f64) -> Self {
        let burst = rate.max(1.0);
        TokenBucket {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }
    pub fn try_take(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Everything handlers share.
#[derive(Debug)]
pub struct AppState {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub pool: ModelPool,
    pub metrics: Metrics,
    pub audit: AuditLog,
    pub pulls: PullRegistry,
    pub started: Instant,
    /// `rate_limit_rps` bucket, when set.
    pub bucket: Option<TokenBucket>,
    /// `max_concurrent_requests` cap on `/v1/*`, when set.
    pub concurrency: Option<Arc<Semaphore>>,
    /// Admission into the engines: slots + queue; beyond it, 429.
    pub admission: Arc<Semaphore>,
    /// The evidence provider: a TEE, simulation, or none (attestation answers 503).
    pub attester: Option<Arc<dyn Attester>>,
    /// SHA-256 of the SPKI of the TLS certificate currently served (zeros without TLS).
    pub tls_spki_sha256: Mutex<[u8; 32]>,
    /// Whether start-up verification of every pinned model passed.
    pub models_verified: bool,
    /// Decoded API key digests.
    pub api_keys: Vec<[u8; 32]>,
    /// Set when the shutdown grace period is over: open SSE streams end with an error event and
    /// `[DONE]` (see [`crate::api::until_shutdown`]).
    pub stop_streams: tokio::sync::watch::Sender<bool>,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    pub fn new(
        cfg: Config,
        metrics: Metrics,
        audit: AuditLog,
        attester: Option<Arc<dyn Attester>>,
        models_verified: bool,
    ) -> Result<SharedState> {
        let cfg = Arc::new(cfg);
        let store = Store::open(cfg.models_dir())?;
        let pool = ModelPool::new(cfg.clone(), store.clone(), metrics.clone());
        let pulls = PullRegistry::new(store.clone(), metrics.clone());
        let api_keys = cfg
            .api_keys
            .iter()
            .filter_map(|h| hex::decode(h).ok())
            .filter_map(|v| <[u8; 32]>::try_from(v).ok())
            .collect();
        Ok(Arc::new(AppState {
            bucket: (cfg.rate_limit_rps > 0.0).then(|| TokenBucket::new(cfg.rate_limit_rps)),
            concurrency: (cfg.max_concurrent_requests > 0)
                .then(|| Arc::new(Semaphore::new(cfg.max_concurrent_requests))),
            admission: Arc::new(Semaphore::new(
                cfg.num_parallel * cfg.max_loaded_models + cfg.max_queue,
            )),
            cfg,
            store,
            pool,
            metrics,
            audit,
            pulls,
            started: Instant::now(),
            attester,
            tls_spki_sha256: Mutex::new([0; 32]),
            models_verified,
            api_keys,
            stop_streams: tokio::sync::watch::Sender::new(false),
        }))
    }

    pub fn redact(&self) -> bool {
        self.cfg.redact_logs || self.cfg.tee_mode
    }

    /// Token counts as reported (`suppress_token_metrics` rounds them).
    pub fn count(&self, n: usize) -> usize {
        if self.cfg.suppress_token_metrics {
            crate::privacy::round_tokens(n)
        } else {
            n
        }
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<AppState>();
    let _ = HashMap::<(), ()>::new();
}
