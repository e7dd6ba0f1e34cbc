//! Start-up and transports: building the state from a configuration (start-up verification of
//! pinned models, config-registered models, the attester), serving the router on a plain TCP
//! listener with graceful shutdown, and the TLS / RA-TLS listener with certificate rotation.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use power_attest::attester::Attester;
use tokio::net::TcpListener;

use crate::audit::AuditLog;
use crate::config::{Config, KeySource};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::state::{AppState, SharedState};
use crate::store::Store;

fn read_key(src: &KeySource) -> Result<[u8; 32]> {
    let text = match src {
        KeySource::File(p) => std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?,
        KeySource::Env(v) => std::env::var(v)
            .map_err(|_| Error::Other(format!("audit key: environment variable {v} is not set")))?,
    };
    hex::decode(text.trim())
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| Error::Other("audit key: expected 64 hex characters".into()))
}

/// Builds the shared state: opens the store, registers the `models` block, verifies every
/// `model_hashes` pin when `tee_mode` is on (refusing to start on a mismatch), opens the audit
/// log and picks the attester.
pub fn build_state(cfg: Config, metrics: Metrics) -> Result<SharedState> {
    let store = Store::open(cfg.models_dir())?;
    for m in &cfg.models {
        // `model_hashes` pins a model's identity, the SHA-256 of its plaintext GGUF (DESIGN
        // §3.5): for an `.enc` file it is checked while decrypting, not against the file.
        let encrypted = crate::store::detect_format(&m.path).is_ok_and(|f| f == "gguf-encrypted");
        let pin = m.sha256.clone().or_else(|| {
            cfg.model_hashes
                .get(&m.name)
                .filter(|_| !encrypted)
                .cloned()
        });
        store.register_reference(&m.name, &m.path, pin.as_deref())?;
        tracing::info!(model = %m.name, "model registered from configuration");
    }
    // Start-up fails on any mismatch, so a running server in tee_mode has verified every model
    // it can serve: each pin in model_hashes must name a registered model, and every registered
    // model must match its manifest digest, its pin and (with model_signing_key) its `.sig`.
    let verified = true;
    if cfg.tee_mode {
        for name in cfg.model_hashes.keys() {
            if store.get(name)?.is_none() {
                return Err(Error::Verification {
                    model: name.clone(),
                    reason: "pinned in model_hashes but not registered".into(),
                });
            }
        }
        let all = store.list()?;
        for manifest in &all {
            let identity = crate::lifecycle::verify_model(&cfg, manifest, &metrics)?;
            if manifest.is_encrypted() {
                store.record_plaintext_sha256(manifest, &identity)?;
            }
            tracing::info!(model = %manifest.name, "model integrity verified");
        }
        if !all.is_empty() {
            tracing::info!(count = all.len(), "all model integrity checks passed");
        }
    }
    let audit = match &cfg.audit_log {
        None => AuditLog::noop(),
        Some(p) => {
            let key = cfg.audit_key_source.as_ref().map(read_key).transpose()?;
            AuditLog::open(p, key)?
        }
    };
    let simulate =
        std::env::var("A3S_TEE_SIMULATE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let attester: Option<Arc<dyn Attester>> = if cfg.tee_mode || simulate || cfg.ra_tls {
        match power_attest::attester::detect() {
            Ok(a) => {
                tracing::info!(tee_type = %a.kind(), "TEE evidence provider ready");
                Some(Arc::from(a))
            }
            Err(e) => {
                if cfg.ra_tls {
                    return Err(Error::Other(format!(
                        "ra_tls needs a TEE or A3S_TEE_SIMULATE=1: {e}"
                    )));
                }
                tracing::warn!("no TEE evidence provider; /v1/attestation answers 503");
                None
            }
        }
    } else {
        None
    };
    AppState::new(cfg, metrics, audit, attester, verified)
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Unloads every model (engine threads stop, KV caches and decrypted plaintext are wiped) and
/// flushes the audit log.
pub async fn finish(st: &SharedState) {
    st.pool.unload_all().await;
    st.audit.flush();
}

/// Runs the keep_alive reaper until the process ends.
pub fn spawn_reaper(st: SharedState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            st.pool.reap().await;
        }
    });
}

/// The model digest an RA-TLS certificate binds (DESIGN §3.2): the served model's identity
/// (plaintext SHA-256, also for an encrypted model) when the
/// server holds exactly one (a pod of the operator serves one model), zeros otherwise — the
/// per-request `/v1/attestation?model=` evidence binds a model in every case.
fn served_model_digest(st: &SharedState) -> [u8; 32] {
    match st.store.list() {
        // An encrypted model's identity is known once verified (at start-up in tee_mode).
        Ok(models) if models.len() == 1 => models[0].identity().unwrap_or([0; 32]),
        _ => [0; 32],
    }
}

/// Certificate lifetime of the TLS listener; rotated at three quarters.
pub const CERT_LIFETIME: Duration = Duration::from_secs(3600);

fn tls_config(
    st: &SharedState,
    ra_tls: bool,
) -> Result<(Arc<rustls::ServerConfig>, time::OffsetDateTime)> {
    let now = time::OffsetDateTime::now_utc();
    let (chain, key, spki, not_after) = if ra_tls {
        let attester = st
            .attester
            .as_ref()
            .ok_or_else(|| Error::Other("ra_tls needs an attester".into()))?;
        let c = power_attest::ratls::issue(
            attester.as_ref(),
            served_model_digest(st),
            CERT_LIFETIME,
            now,
        )?;
        st.metrics
            .attestations
            .with_label_values(&[attester.kind().as_str(), "ok"])
            .inc();
        let (chain, key) = c.certified_key()?;
        (chain, key, c.spki_sha256, c.not_after)
    } else {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| Error::Other(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec!["a3s-power".to_string()])
            .map_err(|e| Error::Other(e.to_string()))?;
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + CERT_LIFETIME;
        let cert = params
            .self_signed(&kp)
            .map_err(|e| Error::Other(e.to_string()))?;
        let spki = power_attest::report_data::spki_sha256(&kp.public_key_der());
        (
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(kp.serialize_der().into()),
            spki,
            now + CERT_LIFETIME,
        )
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Other(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Other(format!("TLS certificate: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if let Ok(mut s) = st.tls_spki_sha256.lock() {
        *s = spki;
    }
    Ok((Arc::new(cfg), not_after))
}

/// Serves `app` over TLS (RA-TLS when `ra_tls`) on `listener`, rotating the certificate before
/// it expires, until `shutdown` resolves.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    st: SharedState,
    ra_tls: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (cfg, mut not_after) = tls_config(&st, ra_tls)?;
    let current = Arc::new(RwLock::new(cfg));
    let rot = current.clone();
    let st2 = st.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            let now = time::OffsetDateTime::now_utc();
            if now + CERT_LIFETIME / 4 >= not_after {
                match tls_config(&st2, ra_tls) {
                    Ok((c, na)) => {
                        not_after = na;
                        if let Ok(mut w) = rot.write() {
                            *w = c;
                        }
                        tracing::info!("TLS certificate rotated");
                    }
                    Err(e) => tracing::warn!(error = %e, "TLS certificate rotation failed"),
                }
            }
        }
    });
    tokio::pin!(shutdown);
    loop {
        let (sock, _) = tokio::select! {
            r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            _ = &mut shutdown => return Ok(()),
        };
        let cfg = current.read().map(|c| c.clone());
        let Ok(cfg) = cfg else { continue };
        let app = app.clone();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(sock)).await
            else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
        });
    }
}
