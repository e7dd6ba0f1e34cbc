//! `/health` (liveness + TEE status), `/ready` (a model is loaded or loadable and verified),
//! `/metrics` (Prometheus text format).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::state::SharedState;

pub async fn health(State(st): State<SharedState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": st.started.elapsed().as_secs(),
        "loaded_models": st.pool.loaded_names().len(),
        "tee": {
            "enabled": st.cfg.tee_mode,
            "type": st.attester.as_ref().map_or("none", |a| a.kind().as_str()),
            "models_verified": st.models_verified,
        },
    }))
}

pub async fn ready(State(st): State<SharedState>) -> impl IntoResponse {
    let store = st.store.clone();
    let registered =
        tokio::task::spawn_blocking(move || store.list().map(|l| l.len()).unwrap_or(0))
            .await
            .unwrap_or(0);
    let ok = st.models_verified && registered > 0;
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "ready": ok,
            "registered_models": registered,
            "loaded_models": st.pool.loaded_names(),
            "models_verified": st.models_verified,
        })),
    )
}

pub async fn metrics(State(st): State<SharedState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
}
