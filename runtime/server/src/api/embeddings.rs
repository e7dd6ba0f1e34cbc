//! `POST /v1/embeddings`: mean-pooled, L2-normalised final hidden states, batched input.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use serde_json::{Value, json};

use super::ApiJson;
use super::error::{ApiError, ApiResult};
use super::generate;
use super::types::*;
use crate::privacy::SensitiveString;
use crate::state::SharedState;

/// Inputs per request at most.
const MAX_INPUTS: usize = 256;

pub async fn embeddings(
    State(st): State<SharedState>,
    ApiJson(req): ApiJson<EmbeddingRequest>,
) -> ApiResult<Json<Value>> {
    let b64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(
                ApiError::bad_request("encoding_format must be float or base64")
                    .param("encoding_format"),
            );
        }
    };
    if req.dimensions.is_some() {
        return Err(ApiError::bad_request("`dimensions` is not supported").param("dimensions"));
    }
    enum In {
        Text(String),
        Tokens(Vec<u32>),
    }
    let inputs: Vec<In> = match req.input {
        EmbeddingInput::One(s) => vec![In::Text(s)],
        EmbeddingInput::Many(v) => v.into_iter().map(In::Text).collect(),
        EmbeddingInput::Tokens(t) => vec![In::Tokens(t)],
        EmbeddingInput::TokenLists(l) => l.into_iter().map(In::Tokens).collect(),
    };
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(
            ApiError::bad_request(format!("`input` must hold 1 to {MAX_INPUTS} items"))
                .param("input"),
        );
    }
    let _permit = generate::admit(&st)?;
    let lease = generate::model(&st, &req.model).await?;
    let n_ctx = lease.model.n_ctx;
    let vocab = lease.model.tokenizer.vocab_size() as u32;
    let mut data = Vec::with_capacity(inputs.len());
    let mut total = 0usize;
    for (i, input) in inputs.into_iter().enumerate() {
        let tokens = match input {
            In::Text(s) => {
                if s.is_empty() {
                    return Err(
                        ApiError::bad_request("an input is empty").param(format!("input[{i}]"))
                    );
                }
                generate::tokenize(&lease, SensitiveString::new(s), false).await?
            }
            In::Tokens(t) => {
                if t.is_empty() || t.iter().any(|&x| x >= vocab) {
                    return Err(ApiError::bad_request(
                        "token ids must be non-empty and in the vocabulary",
                    )
                    .param(format!("input[{i}]")));
                }
                t
            }
        };
        if tokens.len() > n_ctx {
            return Err(ApiError::bad_request(format!(
                "input {i} has {} tokens; this model's context is {n_ctx} tokens",
                tokens.len()
            ))
            .code("context_length_exceeded"));
        }
        total += tokens.len();
        let v = lease
            .model
            .worker
            .embed(tokens)
            .await
            .ok_or_else(|| ApiError::unavailable("the model is being unloaded; retry"))?
            .map_err(|e| ApiError::from(crate::Error::Engine(e)))?;
        let embedding = if b64 {
            let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        } else {
            json!(v)
        };
        data.push(json!({"object": "embedding", "index": i, "embedding": embedding}));
    }
    let t = st.count(total);
    st.metrics
        .inference_requests
        .with_label_values(&["embeddings", "stop"])
        .inc();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": t, "total_tokens": t},
    })))
}
