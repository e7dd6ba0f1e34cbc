//! The one mapping from failures to HTTP status + OpenAI-shaped body
//! (`{"error":{"message","type","param","code"}}`). Messages never echo request content: JSON
//! parser messages are reduced to their position and kind.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

/// An API error with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }
    pub fn param(mut self, p: impl Into<String>) -> Self {
        self.param = Some(p.into());
        self
    }
    pub fn code(mut self, c: &'static str) -> Self {
        self.code = Some(c);
        self
    }
    /// 400: the request is malformed or a parameter is out of range.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }
    /// 422: well-formed but semantically unusable (an invalid JSON schema, a bad tool).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
            message,
        )
    }
    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing or invalid API key (expected `Authorization: Bearer <key>`)",
        )
        .code("invalid_api_key")
    }
    pub fn model_not_found(name: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("the model `{name}` does not exist"),
        )
        .param("model")
        .code("model_not_found")
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message).code("not_found")
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "invalid_request_error", message).code("conflict")
    }
    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("request body exceeds {limit} bytes"),
        )
        .code("request_too_large")
    }
    pub fn rate_limited(why: &str) -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!("{why}; retry later"),
        )
        .code("rate_limit_exceeded")
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
            .code("service_unavailable")
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// A JSON body that failed to parse or has wrong types. serde's messages quote input
    /// (`unknown variant \`...\``, `invalid type: string "..."`), so only the category and position
    /// survive.
    pub fn from_json(e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let what = match e.classify() {
            Category::Syntax | Category::Eof => "malformed JSON",
            Category::Data => "a field has the wrong type or value",
            Category::Io => "unreadable body",
        };
        let raw = e.to_string();
        // Field names in "missing field `x`" are ours, not the client's content: keep them.
        let detail = if let Some(f) = raw
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            format!("missing field `{f}`")
        } else if let Some(f) = raw
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
            .filter(|f| f.len() < 40 && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            format!("unknown field `{f}`")
        } else {
            what.to_string()
        };
        ApiError::bad_request(format!(
            "invalid request body: {detail} at line {} column {}",
            e.line(),
            e.column()
        ))
        .code(if what == "malformed JSON" {
            "invalid_json"
        } else {
            "invalid_type"
        })
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::ModelNotFound(n) => ApiError::model_not_found(&n),
            Error::Store(m) => ApiError::bad_request(m),
            Error::PullInProgress(n) => {
                ApiError::conflict(format!("a pull of `{n}` is already in progress"))
            }
            Error::Verification { model, reason } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                format!("model `{model}` failed verification: {reason}"),
            )
            .code("model_verification_failed"),
            Error::Pull { name, reason } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                format!("pull `{name}`: {reason}"),
            ),
            Error::Engine(picolm::Error::Request(m)) => ApiError::bad_request(m),
            Error::Engine(picolm::Error::Template(_)) => {
                ApiError::bad_request("the model's chat template rejected these messages")
                    .code("template_error")
            }
            Error::Engine(picolm::Error::Tokenizer(_)) => {
                ApiError::bad_request("the input could not be tokenized")
            }
            Error::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                ApiError::bad_request(format!("file not found: {}", path.display()))
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_do_not_echo_input() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        enum Role {
            User,
        }
        let e = serde_json::from_str::<Role>("\"CANARY-42\"").expect_err("bad");
        let a = ApiError::from_json(&e);
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(!a.message.contains("CANARY"), "{}", a.message);
        let e = serde_json::from_str::<serde_json::Value>("{\"a\": CANARY").expect_err("bad");
        let a = ApiError::from_json(&e);
        assert!(
            a.message
                .starts_with("invalid request body: malformed JSON")
        );
        assert_eq!(a.code, Some("invalid_json"));
        let b = a.body();
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert!(b["error"].get("param").is_some());
    }
}
