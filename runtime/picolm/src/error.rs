//! The crate's one error type. Every variant says what was expected, what was found and where
//! (file, key, tensor, byte offset), because the input is usually a file someone else made.

use std::path::PathBuf;

/// Errors from reading, validating and running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The GGUF bytes are malformed: truncated, oversized, inconsistent.
    #[error("invalid GGUF at byte offset {offset}: {what}")]
    Gguf { offset: u64, what: String },
    /// A metadata key is missing or has the wrong type or value.
    #[error("GGUF metadata key `{key}`: {what}")]
    Metadata { key: String, what: String },
    /// A tensor is missing, has the wrong shape or an unusable type.
    #[error("tensor `{name}`: {what}")]
    Tensor { name: String, what: String },
    /// The model uses something picolm does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("quantized data: {0}")]
    Quant(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    /// The model's bytes could not be produced: a read failed, or a streaming source (an
    /// encrypted file) refused a range. The message names the source and the range.
    #[error("model source: {0}")]
    Source(String),
    /// A request asks for something the loaded model cannot do (too long, bad parameter).
    #[error("invalid request: {0}")]
    Request(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn gguf(offset: u64, what: impl Into<String>) -> Self {
        Error::Gguf {
            offset,
            what: what.into(),
        }
    }
    pub(crate) fn metadata(key: &str, what: impl Into<String>) -> Self {
        Error::Metadata {
            key: key.to_owned(),
            what: what.into(),
        }
    }
    pub(crate) fn tensor(name: &str, what: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.to_owned(),
            what: what.into(),
        }
    }
}
