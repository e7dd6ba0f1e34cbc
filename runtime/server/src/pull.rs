//! Pulling models over http(s): plain URLs and Hugging Face-style repositories
//! (`owner/repo:QUANT` resolved through `/api/models/owner/repo`, or `owner/repo/file.gguf`),
//! with bearer-token auth, progress events, HTTP Range resume of a partial file (named by the
//! SHA-256 of its URL, so a retry — in this pull or a later one — continues it), hashing while
//! writing, and a persisted status per model that survives restarts. One pull per model at a
//! time: a second one is refused with [`Error::PullInProgress`]; two models pulled from the same
//! URL at once would share a partial file, so the second is refused too.
//!
//! A resume is only trusted while the remote file is the same: the `ETag` (or `Last-Modified`)
//! of the response that started the partial file is kept next to it and sent as `If-Range`, so a
//! changed file comes back whole (200) and the download starts over instead of splicing two
//! versions together.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::{Store, file_stem, now_unix, validate_name};

/// A progress event, serialized as the SSE `data:` of `POST /v1/models/pull`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum PullEvent {
    Resolving {
        url: String,
    },
    Resuming {
        offset: u64,
        total: Option<u64>,
    },
    Downloading {
        completed: u64,
        total: Option<u64>,
    },
    Verifying,
    Success {
        id: String,
        object: &'static str,
        created: u64,
        sha256: String,
    },
    Error {
        error: String,
    },
}

/// The persisted state of the last pull of a model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PullStatus {
    pub name: String,
    /// `pulling`, `success` or `failed`.
    pub status: String,
    pub completed: u64,
    pub total: Option<u64>,
    pub error: Option<String>,
    pub sha256: Option<String>,
    pub updated: u64,
}

/// What to pull.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub name: String,
    pub url: Option<String>,
    pub pin: Option<String>,
    pub token: Option<String>,
    pub force: bool,
    pub hf_endpoint: String,
    /// The publisher's Ed25519 signature (hex, as in a `.sig` file), stored next to the blob so
    /// that `model_signing_key` can verify the pulled model at load.
    pub signature: Option<String>,
    /// `model_signing_key`: when set, `signature` must verify before anything is registered.
    pub signing_key: Option<String>,
}

/// Checks `req.signature` over `digest` under `req.signing_key` (when both are set).
fn check_signature(req: &PullRequest, digest: &[u8; 32]) -> Result<()> {
    if let (Some(sig), Some(key)) = (&req.signature, &req.signing_key) {
        let key = power_attest::model_seal::parse_verifying_key("model_signing_key", key)?;
        power_attest::model_seal::verify(&key, digest, sig).map_err(|e| Error::Verification {
            model: req.name.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// Stores the pull's signature next to the blob: always when it was verified, otherwise only
/// where the blob has none (an unverified signature never replaces another).
fn store_signature(req: &PullRequest, m: &crate::store::Manifest) -> Result<()> {
    let Some(sig) = &req.signature else {
        return Ok(());
    };
    let p = power_attest::model_seal::sig_path(&m.path);
    if req.signing_key.is_none() && p.exists() {
        return Ok(());
    }
    std::fs::write(&p, format!("{sig}\n")).map_err(|e| Error::io(p, e))
}

/// Pulls in flight and their progress channels.
#[derive(Debug, Clone)]
pub struct PullRegistry {
    store: Store,
    metrics: Metrics,
    active: Arc<Mutex<HashMap<String, broadcast::Sender<PullEvent>>>>,
    /// Partial files being written by a running pull.
    partials: Arc<Mutex<HashSet<PathBuf>>>,
}

/// Releases a partial file's claim when its pull ends.
struct PartialClaim {
    set: Arc<Mutex<HashSet<PathBuf>>>,
    path: PathBuf,
}

impl Drop for PartialClaim {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.path);
        }
    }
}

/// The validator file kept next to a partial download.
fn validator_path(partial: &std::path::Path) -> PathBuf {
    partial.with_extension("validator")
}

/// `ETag` (strong only) or `Last-Modified` of a response, usable in `If-Range`.
fn validator(resp: &reqwest::Response) -> Option<String> {
    let h = resp.headers();
    let etag = h
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|e| !e.starts_with("W/"));
    etag.or_else(|| {
        h.get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
    })
    .map(str::to_string)
}

/// `HF_ENDPOINT` or the public hub.
pub fn hf_endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".into())
        .trim_end_matches('/')
        .to_string()
}

impl PullRegistry {
    pub fn new(store: Store, metrics: Metrics) -> Self {
        let r = PullRegistry {
            store,
            metrics,
            active: Arc::new(Mutex::new(HashMap::new())),
            partials: Arc::new(Mutex::new(HashSet::new())),
        };
        r.mark_interrupted();
        r
    }

    fn status_path(&self, name: &str) -> PathBuf {
        self.store
            .pulls_dir()
            .join(format!("{}.json", file_stem(name)))
    }

    pub fn status(&self, name: &str) -> Option<PullStatus> {
        let b = std::fs::read(self.status_path(name)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    fn save(&self, s: &PullStatus) {
        let p = self.status_path(&s.name);
        let tmp = p.with_extension("json.tmp");
        if let Ok(b) = serde_json::to_vec_pretty(s)
            && std::fs::write(&tmp, b).is_ok()
        {
            let _ = std::fs::rename(&tmp, &p);
        }
    }

    /// A status left `pulling` by a previous process did not finish.
    fn mark_interrupted(&self) {
        let Ok(dir) = std::fs::read_dir(self.store.pulls_dir()) else {
            return;
        };
        for e in dir.flatten() {
            let Ok(b) = std::fs::read(e.path()) else {
                continue;
            };
            if let Ok(mut s) = serde_json::from_slice::<PullStatus>(&b)
                && s.status == "pulling"
            {
                s.status = "failed".into();
                s.error = Some("interrupted (server restarted); pull again to resume".into());
                self.save(&s);
            }
        }
    }

    pub fn is_active(&self, name: &str) -> bool {
        self.active.lock().is_ok_and(|m| m.contains_key(name))
    }

    /// Starts a pull in the background; progress arrives on the receiver. The pull continues if
    /// the receiver is dropped.
    pub fn start(&self, req: PullRequest) -> Result<broadcast::Receiver<PullEvent>> {
        validate_name(&req.name)?;
        let (tx, rx) = broadcast::channel(256);
        {
            let mut active = self
                .active
                .lock()
                .map_err(|_| Error::Other("pull registry poisoned".into()))?;
            if active.contains_key(&req.name) {
                return Err(Error::PullInProgress(req.name));
            }
            active.insert(req.name.clone(), tx.clone());
        }
        let me = self.clone();
        tokio::spawn(async move {
            let name = req.name.clone();
            let mut status = PullStatus {
                name: name.clone(),
                status: "pulling".into(),
                completed: 0,
                total: None,
                error: None,
                sha256: None,
                updated: now_unix(),
            };
            me.save(&status);
            let result = me
                .run(&req, &tx, &mut status)
                .await
                .and_then(|m| store_signature(&req, &m).map(|()| m));
            match result {
                Ok(m) => {
                    status.status = "success".into();
                    status.sha256 = Some(m.sha256.clone());
                    status.completed = m.size;
                    status.total = Some(m.size);
                    me.metrics.pulls.with_label_values(&["success"]).inc();
                    me.save(&status);
                    let _ = tx.send(PullEvent::Success {
                        id: name.clone(),
                        object: "model",
                        created: m.created,
                        sha256: m.sha256,
                    });
                }
                Err(e) => {
                    let msg = match &e {
                        Error::Pull { reason, .. } => reason.clone(),
                        other => other.to_string(),
                    };
                    status.status = "failed".into();
                    status.error = Some(msg.clone());
                    me.metrics.pulls.with_label_values(&["failed"]).inc();
                    me.save(&status);
                    tracing::warn!(model = %name, "pull failed");
                    let _ = tx.send(PullEvent::Error { error: msg });
                }
            }
            if let Ok(mut a) = me.active.lock() {
                a.remove(&name);
            }
        });
        Ok(rx)
    }

    async fn resolve(&self, req: &PullRequest, client: &reqwest::Client) -> Result<String> {
        let perr = |r: String| Error::Pull {
            name: req.name.clone(),
            reason: r,
        };
        if let Some(u) = &req.url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(perr("url must start with http:// or https://".into()));
            }
            return Ok(u.clone());
        }
        if req.name.starts_with("http://") || req.name.starts_with("https://") {
            return Ok(req.name.clone());
        }
        let ep = &req.hf_endpoint;
        let parts: Vec<&str> = req.name.splitn(3, '/').collect();
        if parts.len() < 2 || parts[0].is_empty() || parts[1].is_empty() {
            return Err(perr(
                "expected a URL, `owner/repo:QUANT` or `owner/repo/file.gguf`".into(),
            ));
        }
        if parts.len() == 3 {
            return Ok(format!(
                "{ep}/{}/{}/resolve/main/{}",
                parts[0], parts[1], parts[2]
            ));
        }
        let (repo, quant) = parts[1]
            .split_once(':')
            .ok_or_else(|| perr("expected `owner/repo:QUANT` or `owner/repo/file.gguf`".into()))?;
        let api = format!("{ep}/api/models/{}/{repo}", parts[0]);
        let mut rq = client.get(&api);
        if let Some(t) = &req.token {
            rq = rq.bearer_auth(t);
        }
        let resp = rq.send().await.map_err(|e| perr(format!("{api}: {e}")))?;
        if !resp.status().is_success() {
            return Err(perr(format!("{api}: HTTP {}", resp.status().as_u16())));
        }
        #[derive(Deserialize)]
        struct Sibling {
            rfilename: String,
        }
        #[derive(Deserialize)]
        struct Info {
            #[serde(default)]
            siblings: Vec<Sibling>,
        }
        let info: Info = resp
            .json()
            .await
            .map_err(|e| perr(format!("{api}: bad JSON: {e}")))?;
        let q = quant.to_ascii_lowercase();
        let file = info
            .siblings
            .iter()
            .map(|s| s.rfilename.as_str())
            .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
            .filter(|f| f.to_ascii_lowercase().contains(&q))
            .min_by_key(|f| f.len())
            .ok_or_else(|| {
                perr(format!(
                    "no .gguf file matching `{quant}` in {}/{repo}",
                    parts[0]
                ))
            })?;
        Ok(format!("{ep}/{}/{repo}/resolve/main/{file}", parts[0]))
    }

    async fn run(
        &self,
        req: &PullRequest,
        tx: &broadcast::Sender<PullEvent>,
        status: &mut PullStatus,
    ) -> Result<crate::store::Manifest> {
        let perr = |r: String| Error::Pull {
            name: req.name.clone(),
            reason: r,
        };
        if !req.force
            && let Some(m) = self.store.get(&req.name)?
        {
            let digest = hex::decode(&m.sha256)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| perr("corrupt manifest digest".into()))?;
            check_signature(req, &digest)?;
            return Ok(m);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| perr(e.to_string()))?;
        let url = self.resolve(req, &client).await?;
        let _ = tx.send(PullEvent::Resolving { url: url.clone() });
        let partial = self.store.partials_dir().join(format!(
            "{}.partial",
            hex::encode(Sha256::digest(url.as_bytes()))
        ));
        let _claim = {
            let mut set = self
                .partials
                .lock()
                .map_err(|_| perr("pull registry poisoned".into()))?;
            if !set.insert(partial.clone()) {
                return Err(perr(format!(
                    "{url} is being pulled for another model; pull again when that finishes"
                )));
            }
            PartialClaim {
                set: self.partials.clone(),
                path: partial.clone(),
            }
        };
        let mut last_err = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            match self
                .download(req, &client, &url, &partial, tx, status)
                .await
            {
                Ok((digest, size)) => {
                    let _ = tx.send(PullEvent::Verifying);
                    if let Err(e) = check_signature(req, &digest) {
                        // Nothing unverified stays behind.
                        let _ = std::fs::remove_file(&partial);
                        let _ = std::fs::remove_file(validator_path(&partial));
                        return Err(e);
                    }
                    let store = self.store.clone();
                    let name = req.name.clone();
                    let pin = req.pin.clone();
                    let src = url.clone();
                    let _ = std::fs::remove_file(validator_path(&partial));
                    return tokio::task::spawn_blocking(move || {
                        store.commit_blob(&name, &partial, digest, size, pin.as_deref(), &src)
                    })
                    .await
                    .map_err(|e| perr(e.to_string()))?;
                }
                Err(DownloadError::Fatal(e)) => {
                    return Err(perr(e));
                }
                Err(DownloadError::Retry(e)) => last_err = e,
            }
            // What is on disk is what a resume continues from.
            status.completed = std::fs::metadata(&partial).map_or(0, |m| m.len());
            status.updated = now_unix();
            self.save(status);
        }
        Err(perr(format!(
            "{last_err} (partial download kept; pull again to resume)"
        )))
    }

    async fn download(
        &self,
        req: &PullRequest,
        client: &reqwest::Client,
        url: &str,
        partial: &std::path::Path,
        tx: &broadcast::Sender<PullEvent>,
        status: &mut PullStatus,
    ) -> std::result::Result<([u8; 32], u64), DownloadError> {
        use futures::StreamExt;
        let io = |e: std::io::Error| DownloadError::Fatal(format!("{}: {e}", partial.display()));
        let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        let mut rq = client.get(url);
        if let Some(t) = &req.token {
            rq = rq.bearer_auth(t);
        }
        let known = std::fs::read_to_string(validator_path(partial)).ok();
        if have > 0 {
            rq = rq.header("Range", format!("bytes={have}-"));
            if let Some(v) = &known {
                rq = rq.header("If-Range", v.trim());
            }
        }
        let resp = rq
            .send()
            .await
            .map_err(|e| DownloadError::Retry(format!("{url}: {e}")))?;
        let code = resp.status().as_u16();
        let resumed = code == 206 && have > 0;
        if !(code == 200 || resumed) {
            if code == 416 && have > 0 {
                // The partial is already complete or invalid: start over.
                let _ = std::fs::remove_file(partial);
                return Err(DownloadError::Retry("HTTP 416 on resume".into()));
            }
            let msg = format!("{url}: HTTP {code}");
            return Err(if code >= 500 || code == 429 {
                DownloadError::Retry(msg)
            } else {
                DownloadError::Fatal(msg)
            });
        }
        let total = resp
            .content_length()
            .map(|n| if resumed { n + have } else { n });
        status.total = total;
        if !resumed {
            // A fresh start: remember what this response was, for a later If-Range.
            let vp = validator_path(partial);
            match validator(&resp) {
                Some(v) => std::fs::write(&vp, v).map_err(io)?,
                None => {
                    let _ = std::fs::remove_file(&vp);
                }
            }
        }
        let mut hasher = Sha256::new();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(!resumed)
            .open(partial)
            .map_err(io)?;
        let mut done = 0u64;
        if resumed {
            // Hash what is already there, then append.
            let mut buf = vec![0u8; 1 << 20];
            file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
            loop {
                let n = file.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                done += n as u64;
            }
            let _ = tx.send(PullEvent::Resuming {
                offset: done,
                total,
            });
        }
        let mut w = std::io::BufWriter::new(file);
        let mut stream = resp.bytes_stream();
        let mut last = Instant::now();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                let _ = w.flush();
                DownloadError::Retry(format!("{url}: connection lost after {done} bytes: {e}"))
            })?;
            hasher.update(&chunk);
            w.write_all(&chunk).map_err(io)?;
            done += chunk.len() as u64;
            if last.elapsed() > Duration::from_millis(100) {
                last = Instant::now();
                status.completed = done;
                status.total = total;
                status.updated = now_unix();
                self.save(status);
                let _ = tx.send(PullEvent::Downloading {
                    completed: done,
                    total,
                });
            }
        }
        w.flush().map_err(io)?;
        if let Some(t) = total
            && done != t
        {
            return Err(DownloadError::Retry(format!(
                "{url}: got {done} of {t} bytes"
            )));
        }
        let _ = tx.send(PullEvent::Downloading {
            completed: done,
            total: Some(done),
        });
        status.completed = done;
        status.total = Some(done);
        Ok((hasher.finalize().into(), done))
    }
}

enum DownloadError {
    /// Worth another attempt with Range (connection lost, 5xx).
    Retry(String),
    Fatal(String),
}
