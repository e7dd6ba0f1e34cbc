//! `/v1/models`: list, get, register a local file, delete (unload + deregister), pull with SSE
//! progress and the persisted pull status.

use std::convert::Infallible;
use std::path::PathBuf;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiJson;
use super::error::{ApiError, ApiResult};
use super::types::ModelCard;
use crate::pull::{PullEvent, PullRequest, hf_endpoint};
use crate::state::SharedState;
use crate::store::Manifest;

fn card(m: &Manifest, loaded: &[String]) -> ModelCard {
    ModelCard {
        id: m.name.clone(),
        object: "model",
        created: m.created,
        owned_by: "a3s-power",
        sha256: m.sha256.clone(),
        size: m.size,
        format: m.format.clone(),
        loaded: loaded.contains(&m.name),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::internal("store task failed"))?
        .map_err(ApiError::from)
}

pub async fn list(State(st): State<SharedState>) -> ApiResult<Json<Value>> {
    let store = st.store.clone();
    let all = blocking(move || store.list()).await?;
    let loaded = st.pool.loaded_names();
    let data: Vec<ModelCard> = all.iter().map(|m| card(m, &loaded)).collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /v1/models/{name}` and `GET /v1/models/pull/{name}/status` (names contain `/`).
pub async fn get_or_status(
    State(st): State<SharedState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    if let Some(pulled) = name
        .strip_prefix("pull/")
        .and_then(|r| r.strip_suffix("/status"))
    {
        crate::store::validate_name(pulled).map_err(ApiError::from)?;
        let active = st.pulls.is_active(pulled);
        return match st.pulls.status(pulled) {
            Some(s) => Ok(Json(json!({
                "name": s.name,
                "status": if active { "pulling" } else { s.status.as_str() },
                "completed": s.completed,
                "total": s.total,
                "error": s.error,
                "sha256": s.sha256,
            }))),
            None => Err(ApiError::not_found(format!(
                "no pull of `{pulled}` is known"
            ))),
        };
    }
    let store = st.store.clone();
    let n = name.clone();
    let m = blocking(move || store.get(&n))
        .await?
        .ok_or_else(|| ApiError::model_not_found(&name))?;
    Ok(Json(
        serde_json::to_value(card(&m, &st.pool.loaded_names())).unwrap_or(Value::Null),
    ))
}

#[derive(Debug, Deserialize)]
pub struct RegisterRequest {
    name: String,
    path: PathBuf,
    #[serde(default)]
    sha256: Option<String>,
}

pub async fn register(
    State(st): State<SharedState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<Response> {
    crate::store::validate_name(&req.name).map_err(ApiError::from)?;
    let pin = match req
        .sha256
        .as_deref()
        .or(st.cfg.model_hashes.get(&req.name).map(String::as_str))
    {
        Some(p) => Some(
            crate::config::normalize_digest(p)
                .map_err(|e| ApiError::bad_request(e).param("sha256"))?,
        ),
        None => None,
    };
    if !req.path.is_absolute() {
        return Err(ApiError::bad_request("`path` must be absolute").param("path"));
    }
    if !req.path.is_file() {
        return Err(ApiError::bad_request("`path` is not a readable file").param("path"));
    }
    let store = st.store.clone();
    let name = req.name.clone();
    let path = req.path.clone();
    let signing_key = st.cfg.model_signing_key.clone();
    let m = blocking(move || {
        // The publisher's signature travels with the file. With model_signing_key it must
        // verify before anything is registered; without, it never replaces one already there.
        let sig = power_attest::model_seal::sig_path(&path);
        let sig_text = if sig.is_file() {
            Some(std::fs::read_to_string(&sig).map_err(|e| crate::Error::io(&sig, e))?)
        } else {
            None
        };
        if let (Some(key), Some(text)) = (&signing_key, &sig_text) {
            let key = power_attest::model_seal::parse_verifying_key("model_signing_key", key)?;
            let digest = crate::store::sha256_file(&path)?;
            power_attest::model_seal::verify(&key, &digest, text.trim()).map_err(|e| {
                crate::Error::Verification {
                    model: name.clone(),
                    reason: e.to_string(),
                }
            })?;
        }
        let m = store.register_copy(&name, &path, pin.as_deref())?;
        if let Some(text) = sig_text {
            let dst = power_attest::model_seal::sig_path(&m.path);
            if signing_key.is_some() || !dst.exists() {
                std::fs::write(&dst, text).map_err(|e| crate::Error::io(&dst, e))?;
            }
        }
        Ok(m)
    })
    .await?;
    st.pool.unload(&m.name).await;
    let mut ev = crate::audit::AuditEvent::new("model.register");
    ev.model = Some(m.name.clone());
    st.audit.log(&ev);
    let c = card(&m, &st.pool.loaded_names());
    Ok((axum::http::StatusCode::CREATED, Json(c)).into_response())
}

pub async fn delete(
    State(st): State<SharedState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    crate::store::validate_name(&name).map_err(ApiError::from)?;
    st.pool.unload(&name).await;
    let store = st.store.clone();
    let n = name.clone();
    blocking(move || store.delete(&n)).await?;
    let mut ev = crate::audit::AuditEvent::new("model.delete");
    ev.model = Some(name.clone());
    st.audit.log(&ev);
    Ok(Json(
        json!({"id": name, "object": "model", "deleted": true}),
    ))
}

#[derive(Debug, Deserialize)]
pub struct PullBody {
    name: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    force: bool,
    /// `false` waits for the end and answers with one JSON object.
    #[serde(default)]
    stream: Option<bool>,
    /// Ed25519 signature of the model (128 hex characters, the content of a `.sig` file).
    #[serde(default)]
    signature: Option<String>,
}

pub async fn pull(
    State(st): State<SharedState>,
    ApiJson(b): ApiJson<PullBody>,
) -> ApiResult<Response> {
    crate::store::validate_name(&b.name).map_err(ApiError::from)?;
    if let Some(u) = &b.url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        return Err(
            ApiError::bad_request("`url` must start with http:// or https://").param("url"),
        );
    }
    let pin = match b
        .sha256
        .as_deref()
        .or(st.cfg.model_hashes.get(&b.name).map(String::as_str))
    {
        Some(p) => Some(
            crate::config::normalize_digest(p)
                .map_err(|e| ApiError::bad_request(e).param("sha256"))?,
        ),
        None => None,
    };
    if let Some(s) = &b.signature
        && (s.len() != 128 || hex::decode(s).is_err())
    {
        return Err(ApiError::bad_request(
            "`signature` must be 128 hex characters (an Ed25519 signature from a3s-power seal)",
        )
        .param("signature"));
    }
    let token = b
        .token
        .or_else(|| std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()));
    let mut rx = st
        .pulls
        .start(PullRequest {
            name: b.name.clone(),
            url: b.url,
            pin,
            token,
            force: b.force,
            hf_endpoint: hf_endpoint(),
            signature: b.signature.map(|s| s.to_ascii_lowercase()),
            signing_key: st.cfg.model_signing_key.clone(),
        })
        .map_err(ApiError::from)?;
    let mut ev = crate::audit::AuditEvent::new("model.pull");
    ev.model = Some(b.name.clone());
    st.audit.log(&ev);
    if b.stream == Some(false) {
        loop {
            match rx.recv().await {
                Ok(PullEvent::Success {
                    id,
                    sha256,
                    created,
                    ..
                }) => {
                    return Ok(Json(json!({"status": "success", "id": id, "object": "model", "created": created, "sha256": sha256})).into_response());
                }
                Ok(PullEvent::Error { error }) => {
                    return Err(ApiError::new(
                        axum::http::StatusCode::BAD_GATEWAY,
                        "server_error",
                        error,
                    )
                    .code("pull_failed"));
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return Err(ApiError::internal("pull ended without a result")),
            }
        }
    }
    let tail = PullEvent::Error {
        error: "the server is shutting down; pull again to resume".into(),
    };
    let stream = super::until_shutdown(
        &st,
        async_stream(rx),
        vec![Event::default().data(serde_json::to_string(&tail).unwrap_or_default())],
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn async_stream(
    mut rx: tokio::sync::broadcast::Receiver<PullEvent>,
) -> tokio_stream::wrappers::UnboundedReceiverStream<Result<Event, Infallible>> {
    let (tx, out) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let last = matches!(ev, PullEvent::Success { .. } | PullEvent::Error { .. });
                    let data = serde_json::to_string(&ev).unwrap_or_default();
                    if tx.send(Ok(Event::default().data(data))).is_err() || last {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    });
    tokio_stream::wrappers::UnboundedReceiverStream::new(out)
}
