//! `GET /v1/attestation?nonce=<64 hex>&model=<name>`: fresh evidence whose report_data binds the
//! nonce, the SPKI of the TLS certificate being served and the model's identity, the SHA-256 of
//! its plaintext GGUF (DESIGN §3.2, §3.5; for an encrypted model, verified by decrypting it).
//! 503 when there is neither a TEE nor simulation.

use axum::Json;
use axum::extract::{Query, State};
use power_attest::{AttestationDocument, ReportData};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use crate::state::SharedState;

#[derive(Debug, Deserialize)]
pub struct AttestQuery {
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

async fn manifest(st: &SharedState, name: &str) -> ApiResult<crate::store::Manifest> {
    let store = st.store.clone();
    let n = name.to_string();
    tokio::task::spawn_blocking(move || store.get(&n))
        .await
        .map_err(|_| ApiError::internal("store task failed"))?
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::model_not_found(name))
}

pub async fn attestation(
    State(st): State<SharedState>,
    q: Result<Query<AttestQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<AttestationDocument>> {
    let Query(q) = q.map_err(|_| ApiError::bad_request("invalid query string"))?;
    let attester = st.attester.clone().ok_or_else(|| {
        ApiError::unavailable("no TEE is available (set A3S_TEE_SIMULATE=1 for simulated evidence)")
            .code("tee_unavailable")
    })?;
    let nonce: [u8; 32] = match &q.nonce {
        None => [0; 32],
        Some(h) => hex::decode(h)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| {
                ApiError::bad_request("`nonce` must be 64 hex characters").param("nonce")
            })?,
    };
    let model_sha256: [u8; 32] = match &q.model {
        None => [0; 32],
        Some(name) => {
            let mut m = manifest(&st, name).await?;
            if m.identity().is_none() && m.is_encrypted() {
                // An encrypted model's identity is its plaintext digest, known once a
                // decryption has verified it: load the model (which records it), then bind it.
                drop(st.pool.acquire(name).await.map_err(ApiError::from)?);
                m = manifest(&st, name).await?;
            }
            m.identity()
                .ok_or_else(|| ApiError::internal("corrupt manifest digest"))?
        }
    };
    let tls_spki_sha256 = st.tls_spki_sha256.lock().map(|g| *g).unwrap_or([0; 32]);
    let rd = ReportData {
        nonce,
        tls_spki_sha256,
        model_sha256,
    };
    let kind = attester.kind().as_str();
    let bytes = rd.to_bytes();
    let bundle = tokio::task::spawn_blocking(move || attester.attest(&bytes))
        .await
        .map_err(|_| ApiError::internal("attestation task failed"))?;
    match bundle {
        Ok(b) => {
            st.metrics
                .attestations
                .with_label_values(&[kind, "ok"])
                .inc();
            let mut ev = crate::audit::AuditEvent::new("attestation");
            ev.model = q.model.clone();
            ev.outcome = Some(kind.to_string());
            st.audit.log(&ev);
            Ok(Json(AttestationDocument::from_bundle(&b, &rd, q.model)))
        }
        Err(e) => {
            st.metrics
                .attestations
                .with_label_values(&[kind, "failed"])
                .inc();
            Err(ApiError::unavailable(format!("attestation failed: {e}")))
        }
    }
}
