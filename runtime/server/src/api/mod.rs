//! The HTTP API: `router(state)` builds every route with its middleware. Handlers live in one
//! module per resource; request bodies go through [`ApiJson`] so that malformed JSON, wrong
//! types and oversized bodies all become OpenAI-shaped errors.

pub mod error;
pub mod types;

mod attestation;
mod chat;
mod completions;
mod embeddings;
mod generate;
mod health;
mod models;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::state::SharedState;
use error::ApiError;

/// A JSON body parsed with OpenAI-shaped errors (400 malformed/wrong type, 413 too large).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(4 * 1024 * 1024, |l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(limit)
            } else {
                ApiError::bad_request("could not read the request body")
            }
        })?;
        let mut bytes = zeroize::Zeroizing::new(bytes.to_vec());
        let parsed = serde_json::from_slice::<T>(&bytes).map_err(|e| ApiError::from_json(&e));
        zeroize::Zeroize::zeroize(&mut *bytes);
        parsed.map(ApiJson)
    }
}

#[derive(Debug, Clone, Copy)]
struct BodyLimit(usize);

/// The request id of a request (`x-request-id`, generated when absent or unusable).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The authenticated principal: a short hash of the API key, for audit records.
#[derive(Debug, Clone)]
pub struct Principal(pub Option<String>);

/// Builds the application.
pub fn router(state: SharedState) -> Router {
    let limit = state.cfg.max_body_bytes;
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat::chat))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/models", get(models::list).post(models::register))
        .route("/v1/models/pull", post(models::pull))
        .route(
            "/v1/models/{*name}",
            get(models::get_or_status).delete(models::delete),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), auth))
        .route("/v1/attestation", get(attestation::attestation))
        .route_layer(middleware::from_fn_with_state(state.clone(), limits));
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .merge(v1)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Request id, metrics and a log line per request (route template only, never bodies).
async fn observe(State(st): State<SharedState>, mut req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map_or_else(
            || format!("req-{:016x}", rand::random::<u64>()),
            str::to_string,
        );
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().as_str().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    req.extensions_mut()
        .insert(BodyLimit(st.cfg.max_body_bytes));
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    st.metrics
        .http_requests
        .with_label_values(&[&method, &route, &status])
        .inc();
    st.metrics
        .http_duration
        .with_label_values(&[&route])
        .observe(t0.elapsed().as_secs_f64());
    tracing::info!(
        request_id = %id,
        method = %method,
        route = %route,
        status = %status,
        ms = t0.elapsed().as_millis() as u64,
        "request"
    );
    if st.redact() && resp.status().as_u16() >= 400 {
        resp = sanitize_error_body(resp).await;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// With redaction on, error messages lose anything quoted (model names, values) that could echo
/// request content.
async fn sanitize_error_body(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return ApiError::internal("error body unavailable").into_response();
    };
    let out = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut v) => {
            if let Some(m) = v.pointer_mut("/error/message")
                && let Some(text) = m.as_str()
            {
                *m = serde_json::Value::String(crate::privacy::sanitize_error(text, true));
            }
            Bytes::from(v.to_string())
        }
        Err(_) => bytes,
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(out))
}

/// Token bucket + concurrency cap on `/v1/*`.
async fn limits(State(st): State<SharedState>, req: Request, next: Next) -> Response {
    if let Some(b) = &st.bucket
        && !b.try_take()
    {
        st.metrics.rate_limited.with_label_values(&["rate"]).inc();
        return ApiError::rate_limited("rate limit exceeded").into_response();
    }
    let permit = match &st.concurrency {
        Some(sem) => match sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                st.metrics
                    .rate_limited
                    .with_label_values(&["concurrency"])
                    .inc();
                return ApiError::rate_limited("too many concurrent requests").into_response();
            }
        },
        None => None,
    };
    let resp = next.run(req).await;
    match permit {
        // The permit travels with the body, so a streaming response counts against
        // max_concurrent_requests until its last byte, not just until its headers.
        Some(p) => {
            let (parts, body) = resp.into_parts();
            let guarded = body.into_data_stream().map(move |chunk| {
                let _held = &p;
                chunk
            });
            Response::from_parts(parts, Body::from_stream(guarded))
        }
        None => resp,
    }
}

/// Ends an SSE stream early when the shutdown grace period is over (`state.stop_streams`): the
/// client then receives `tail` (an error event, `[DONE]`) instead of a cut connection.
pub fn until_shutdown<S>(
    st: &crate::state::SharedState,
    events: S,
    tail: Vec<Event>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + use<S>
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let mut rx = st.stop_streams.subscribe();
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    let stop = async move {
        if rx.wait_for(|v| *v).await.is_err() {
            // The state is gone: nothing will ever stop this stream early.
            std::future::pending::<()>().await;
        }
        flag.store(true, Ordering::SeqCst);
    };
    let mut tail = tail;
    let rest =
        futures::stream::once(async move { cut.load(Ordering::SeqCst) }).flat_map(move |was_cut| {
            let evs = if was_cut {
                std::mem::take(&mut tail)
            } else {
                Vec::new()
            };
            futures::stream::iter(evs.into_iter().map(Ok))
        });
    events.take_until(Box::pin(stop)).chain(rest)
}

/// The tail of an inference stream cut by shutdown: an OpenAI error event and `[DONE]`.
pub fn shutdown_tail() -> Vec<Event> {
    vec![
        Event::default().data(
            ApiError::unavailable("the server is shutting down; retry")
                .body()
                .to_string(),
        ),
        Event::default().data("[DONE]"),
    ]
}

/// Bearer API keys: the SHA-256 of the presented key must equal a configured digest
/// (constant-time compare).
async fn auth(State(st): State<SharedState>, mut req: Request, next: Next) -> Response {
    if st.api_keys.is_empty() {
        req.extensions_mut().insert(Principal(None));
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|k| <[u8; 32]>::from(Sha256::digest(k.trim().as_bytes())));
    let ok = presented.is_some_and(|d| {
        st.api_keys
            .iter()
            .fold(0u8, |acc, k| acc | k.ct_eq(&d).unwrap_u8())
            == 1
    });
    if !ok {
        let mut ev = crate::audit::AuditEvent::new("auth.failure");
        ev.request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
        st.audit.log(&ev);
        return ApiError::unauthorized().into_response();
    }
    let principal = presented.map(|d| hex::encode(&d[..6]));
    req.extensions_mut().insert(Principal(principal));
    next.run(req).await
}
