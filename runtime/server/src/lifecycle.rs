//! Loaded models: autoload on first use, verification before the first token (SHA-256 pin,
//! Ed25519 `.sig`, encrypted-model digest), `max_loaded_models` with LRU eviction of idle models,
//! `keep_alive` with a background reaper, and unload that stops the engine thread (dropping its
//! KV cache) and wipes decrypted plaintext.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use picolm::chat::ChatTemplate;
use picolm::engine::{Engine, EngineConfig};
use picolm::grammar::TokenTrie;
use picolm::tokenizer::Tokenizer;
use picolm::{GgufFile, Model};
use power_attest::model_crypt::TempPlaintext;

use crate::config::{Config, KeepAlive};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::{Manifest, Store};
use crate::worker::WorkerHandle;

/// A model in memory with its engine thread.
pub struct LoadedModel {
    pub manifest: Manifest,
    pub worker: WorkerHandle,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    /// Context per sequence.
    pub n_ctx: usize,
    /// Whether the model has a BOS the template may already spell out.
    trie: OnceLock<Arc<TokenTrie>>,
    active: AtomicUsize,
    last_used: Mutex<Instant>,
    /// Decrypted plaintext (file mode), overwritten and removed when dropped.
    _plaintext: Option<TempPlaintext>,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("name", &self.manifest.name)
            .field("n_ctx", &self.n_ctx)
            .finish_non_exhaustive()
    }
}

impl LoadedModel {
    /// The vocabulary trie for grammar-constrained sampling, built on first use.
    pub fn trie(&self) -> Arc<TokenTrie> {
        self.trie
            .get_or_init(|| Arc::new(TokenTrie::new(&self.tokenizer)))
            .clone()
    }
    fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        self.last_used.lock().ok().map(|t| t.elapsed())
    }
}

impl Drop for LoadedModel {
    fn drop(&mut self) {
        self.worker.shutdown();
    }
}

/// Marks a model busy while a request uses it.
#[derive(Debug)]
pub struct ModelLease {
    pub model: Arc<LoadedModel>,
}

impl Drop for ModelLease {
    fn drop(&mut self) {
        if let Ok(mut t) = self.model.last_used.lock() {
            *t = Instant::now();
        }
        self.model.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// All loaded models.
#[derive(Debug)]
pub struct ModelPool {
    cfg: Arc<Config>,
    store: Store,
    metrics: Metrics,
    loaded: tokio::sync::Mutex<HashMap<String, Arc<LoadedModel>>>,
    snapshot: Mutex<Vec<String>>,
}

/// Verifies `manifest` against the configuration's pins (start-up check in `tee_mode`). An
/// encrypted model is decrypted and authenticated chunk by chunk, keeping nothing, and its
/// plaintext digest checked. Returns the model's identity (the SHA-256 of its plaintext).
pub fn verify_model(cfg: &Config, manifest: &Manifest, metrics: &Metrics) -> Result<[u8; 32]> {
    let fail = |reason: String| {
        metrics
            .model_verifications
            .with_label_values(&["failed"])
            .inc();
        Error::Verification {
            model: manifest.name.clone(),
            reason,
        }
    };
    let pin = cfg.model_hashes.get(&manifest.name);
    if manifest.is_encrypted() {
        return crate::encrypted::verify(cfg, manifest, metrics);
    }
    let digest = crate::store::sha256_file(&manifest.path)?;
    if hex::encode(digest) != manifest.sha256 {
        return Err(fail(format!(
            "file changed since registration: sha256 {} differs from the manifest's {}",
            hex::encode(digest),
            manifest.sha256
        )));
    }
    if let Some(pin) = pin
        && *pin != manifest.sha256
    {
        return Err(fail(format!(
            "sha256 {} differs from model_hashes pin {pin}",
            manifest.sha256
        )));
    }
    if let Some(k) = &cfg.model_signing_key {
        let key = power_attest::model_seal::parse_verifying_key("model_signing_key", k)?;
        let sig = power_attest::model_seal::sig_path(&manifest.path);
        if !sig.is_file() {
            return Err(fail(format!(
                "signature file {} is missing (model_signing_key is set, so every model must be \
                 sealed: a3s-power seal)",
                sig.display()
            )));
        }
        power_attest::model_seal::verify_file(&manifest.path, &key, Some(&digest))
            .map_err(|e| fail(e.to_string()))?;
    }
    metrics.model_verifications.with_label_values(&["ok"]).inc();
    Ok(digest)
}

fn load_blocking(
    cfg: &Config,
    store: &Store,
    manifest: Manifest,
    metrics: Metrics,
) -> Result<LoadedModel> {
    let mut plaintext = None;
    let file = if manifest.is_encrypted() {
        // Decrypted, authenticated and checked against its pin before the engine sees it.
        let opened = crate::encrypted::open(cfg, &manifest, &metrics)?;
        store.record_plaintext_sha256(&manifest, &opened.plaintext_sha256)?;
        plaintext = opened.temp;
        Arc::new(opened.file)
    } else {
        verify_model(cfg, &manifest, &metrics)?;
        Arc::new(GgufFile::open(&manifest.path)?)
    };
    let model = Arc::new(Model::load(file.clone())?.with_layer_streaming(cfg.layer_streaming));
    let tokenizer = Tokenizer::from_metadata(file.metadata())?;
    let template = ChatTemplate::from_metadata(file.metadata()).ok();
    let train = model.config.n_ctx_train.max(16);
    let n_ctx = if cfg.ctx_size > 0 {
        cfg.ctx_size.min(train)
    } else {
        train.min(4096)
    };
    let engine = Engine::new(
        model,
        tokenizer.clone(),
        EngineConfig {
            n_ctx,
            max_sequences: cfg.num_parallel,
            max_batch_tokens: 512,
            zero_on_finish: true,
        },
    )?;
    let worker = WorkerHandle::spawn(engine, &manifest.name, metrics)
        .map_err(|e| Error::Other(format!("starting the engine thread: {e}")))?;
    Ok(LoadedModel {
        manifest,
        worker,
        tokenizer,
        template,
        n_ctx,
        trie: OnceLock::new(),
        active: AtomicUsize::new(0),
        last_used: Mutex::new(Instant::now()),
        _plaintext: plaintext,
    })
}

impl ModelPool {
    pub fn new(cfg: Arc<Config>, store: Store, metrics: Metrics) -> Self {
        ModelPool {
            cfg,
            store,
            metrics,
            loaded: tokio::sync::Mutex::new(HashMap::new()),
            snapshot: Mutex::new(Vec::new()),
        }
    }

    /// Names of loaded models (non-blocking).
    pub fn loaded_names(&self) -> Vec<String> {
        self.snapshot.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn publish(&self, map: &HashMap<String, Arc<LoadedModel>>) {
        if let Ok(mut s) = self.snapshot.lock() {
            *s = map.keys().cloned().collect();
        }
        self.metrics.loaded_models.set(map.len() as i64);
    }

    /// The model, loading it (and evicting the least recently used idle model) if needed.
    pub async fn acquire(&self, name: &str) -> Result<ModelLease> {
        let mut map = self.loaded.lock().await;
        if let Some(m) = map.get(name) {
            m.active.fetch_add(1, Ordering::SeqCst);
            return Ok(ModelLease { model: m.clone() });
        }
        let manifest = self
            .store
            .get(name)?
            .ok_or_else(|| Error::ModelNotFound(name.to_string()))?;
        while map.len() >= self.cfg.max_loaded_models {
            let victim = map
                .iter()
                .filter_map(|(n, m)| m.idle_for().map(|d| (n.clone(), d)))
                .max_by_key(|(_, d)| *d)
                .map(|(n, _)| n);
            match victim {
                Some(v) => {
                    map.remove(&v);
                    self.metrics.model_loads.with_label_values(&["evict"]).inc();
                    tracing::info!(model = %v, "model evicted (LRU)");
                }
                None => {
                    return Err(Error::Other(
                        "every loaded model is busy and max_loaded_models is reached".into(),
                    ));
                }
            }
        }
        let cfg = self.cfg.clone();
        let metrics = self.metrics.clone();
        let t0 = Instant::now();
        let store = self.store.clone();
        let loaded =
            tokio::task::spawn_blocking(move || load_blocking(&cfg, &store, manifest, metrics))
                .await
                .map_err(|e| Error::Other(format!("model load task: {e}")))??;
        tracing::info!(
            model = %name,
            ms = t0.elapsed().as_millis() as u64,
            layer_streaming = self.cfg.layer_streaming,
            "model loaded"
        );
        self.metrics.model_loads.with_label_values(&["load"]).inc();
        let m = Arc::new(loaded);
        m.active.fetch_add(1, Ordering::SeqCst);
        map.insert(name.to_string(), m.clone());
        self.publish(&map);
        Ok(ModelLease { model: m })
    }

    /// Unloads `name` if loaded; returns whether it was.
    pub async fn unload(&self, name: &str) -> bool {
        let mut map = self.loaded.lock().await;
        let was = map.remove(name).is_some();
        if was {
            self.metrics
                .model_loads
                .with_label_values(&["unload"])
                .inc();
        }
        self.publish(&map);
        was
    }

    pub async fn unload_all(&self) {
        let mut map = self.loaded.lock().await;
        map.clear();
        self.publish(&map);
    }

    /// Unloads models idle for longer than `keep_alive`.
    pub async fn reap(&self) {
        let limit = match self.cfg.keep_alive {
            KeepAlive::Forever => return,
            KeepAlive::Immediate => Duration::ZERO,
            KeepAlive::For(d) => d,
        };
        let mut map = self.loaded.lock().await;
        let before = map.len();
        map.retain(|name, m| {
            let keep = m.idle_for().is_none_or(|d| d < limit);
            if !keep {
                tracing::info!(model = %name, "model unloaded (keep_alive)");
            }
            keep
        });
        if map.len() != before {
            self.metrics
                .model_loads
                .with_label_values(&["unload"])
                .inc_by((before - map.len()) as u64);
            self.publish(&map);
        }
    }
}
