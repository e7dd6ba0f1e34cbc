//! The library's error type. HTTP mapping lives in `api::error`; this enum says what went wrong
//! and where (file, line, key, model, URL) without ever quoting request content.

use std::path::PathBuf;

/// Errors of the `a3s-power` library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file or environment variable is wrong.
    #[error("{origin}: `{key}`: {reason}")]
    Config {
        /// `file:line` or the environment variable name.
        origin: String,
        key: String,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model name that the store does not know.
    #[error("model `{0}` not found")]
    ModelNotFound(String),
    /// The model store refused an operation (bad name, digest mismatch, ...).
    #[error("model store: {0}")]
    Store(String),
    /// Integrity: a digest or signature did not match its pin.
    #[error("model `{model}` failed verification: {reason}")]
    Verification { model: String, reason: String },
    /// A pull failed (network, HTTP status, resume).
    #[error("pull `{name}`: {reason}")]
    Pull { name: String, reason: String },
    /// A pull of the same model is already running.
    #[error("a pull of `{0}` is already in progress")]
    PullInProgress(String),
    #[error(transparent)]
    Engine(#[from] picolm::Error),
    #[error(transparent)]
    Attest(#[from] power_attest::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
