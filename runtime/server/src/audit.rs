//! The audit log: one JSON line per security-relevant event (inference, model load/unload/pull/
//! delete, attestation, authentication failure). Events carry identifiers, counts and outcomes,
//! never request content. Lines are optionally AES-256-GCM encrypted (`base64(nonce || ct)`), and
//! written by a background thread so a slow disk never stalls a request; [`AuditLog::flush`]
//! waits until everything logged before it is on disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::Serialize;

use crate::error::{Error, Result};

/// One audit record.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AuditEvent {
    /// Unix milliseconds.
    pub ts_ms: u64,
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Short hash of the API key used, when authentication is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

impl AuditEvent {
    pub fn new(event: &'static str) -> Self {
        AuditEvent {
            ts_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            event,
            ..AuditEvent::default()
        }
    }
}

enum Msg {
    Line(Vec<u8>),
    Flush(mpsc::Sender<()>),
}

/// An audit sink: noop, or an asynchronous JSONL writer (optionally encrypted).
pub struct AuditLog {
    tx: Option<Mutex<mpsc::Sender<Msg>>>,
    cipher: Option<Aes256Gcm>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("encrypted", &self.cipher.is_some())
            .finish()
    }
}

impl AuditLog {
    /// Discards everything.
    pub fn noop() -> Self {
        AuditLog {
            tx: None,
            cipher: None,
            path: None,
        }
    }

    /// Appends JSON lines to `path`; with `key`, each line is encrypted.
    pub fn open(path: &Path, key: Option<[u8; 32]>) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("a3s-audit".into())
            .spawn(move || {
                let mut w = std::io::BufWriter::new(file);
                while let Ok(first) = rx.recv() {
                    // Write everything queued, then flush: lines reach the file promptly without
                    // a syscall per line under load.
                    for m in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok()))
                    {
                        match m {
                            Msg::Line(l) => {
                                let _ = w.write_all(&l);
                            }
                            Msg::Flush(done) => {
                                let _ = w.flush();
                                let _ = w.get_ref().sync_data();
                                let _ = done.send(());
                            }
                        }
                    }
                    let _ = w.flush();
                }
                let _ = w.flush();
            })
            .map_err(|e| Error::io(path, e))?;
        let cipher = key.map(|k| Aes256Gcm::new((&k).into()));
        Ok(AuditLog {
            tx: Some(Mutex::new(tx)),
            cipher,
            path: Some(path.to_path_buf()),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues an event; never blocks on I/O.
    pub fn log(&self, event: &AuditEvent) {
        let Some(tx) = &self.tx else { return };
        let Ok(json) = serde_json::to_vec(event) else {
            return;
        };
        let mut line = match &self.cipher {
            None => json,
            Some(c) => {
                let nonce: [u8; 12] = rand::random();
                let Ok(ct) = c.encrypt(&Nonce::from(nonce), json.as_slice()) else {
                    return;
                };
                let mut raw = nonce.to_vec();
                raw.extend_from_slice(&ct);
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .encode(raw)
                    .into_bytes()
            }
        };
        line.push(b'\n');
        if let Ok(tx) = tx.lock() {
            let _ = tx.send(Msg::Line(line));
        }
    }

    /// Waits until every event logged so far is written and synced.
    pub fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done_tx, done_rx) = mpsc::channel();
        if let Ok(tx) = tx.lock()
            && tx.send(Msg::Flush(done_tx)).is_err()
        {
            return;
        }
        let _ = done_rx.recv_timeout(std::time::Duration::from_secs(10));
    }
}

/// Decrypts one encrypted audit line (for tests and auditors' tools).
pub fn decrypt_line(key: &[u8; 32], line: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .ok()?;
    if raw.len() < 12 + 16 {
        return None;
    }
    let nonce: [u8; 12] = raw[..12].try_into().ok()?;
    Aes256Gcm::new(key.into())
        .decrypt(&Nonce::from(nonce), &raw[12..])
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_encrypted_lines_flush() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        let p = dir.join("audit.jsonl");
        let log = AuditLog::open(&p, None).expect("open");
        let mut e = AuditEvent::new("inference");
        e.model = Some("m".into());
        e.completion_tokens = Some(3);
        log.log(&e);
        log.flush();
        let text = std::fs::read_to_string(&p).expect("read");
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect("json line");
        assert_eq!(v["event"], "inference");
        assert_eq!(v["completion_tokens"], 3);

        let key = [7u8; 32];
        let p2 = dir.join("enc.jsonl");
        let log = AuditLog::open(&p2, Some(key)).expect("open");
        log.log(&e);
        log.log(&AuditEvent::new("model.load"));
        log.flush();
        let text = std::fs::read_to_string(&p2).expect("read");
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(!text.contains("inference"), "ciphertext only");
        let pt = decrypt_line(&key, lines[0]).expect("decrypts");
        let v: serde_json::Value = serde_json::from_slice(&pt).expect("json");
        assert_eq!(v["event"], "inference");
        assert!(
            decrypt_line(&[8u8; 32], lines[0]).is_none(),
            "wrong key fails"
        );
        AuditLog::noop().log(&e);
        AuditLog::noop().flush();
    }
}
