//! picolm: a pure-Rust GGUF inference engine.
//!
//! The crate owns everything between a GGUF file and a stream of tokens: the zero-copy
//! reader ([`gguf`]) over a resident or streaming byte source ([`source`], [`stream`]),
//! quantized formats and their kernels ([`quant`]), the model's weights ([`model`]) and
//! forward pass ([`forward`]), tokenizers ([`tokenizer`]), chat templates
//! ([`chat`]) and sampling ([`sampler`]). It has no HTTP, no TEE and no async runtime: an
//! auditor of the inference path reads this crate alone.

pub mod chat;
pub mod engine;
pub mod error;
pub mod forward;
pub mod gguf;
pub mod grammar;
pub mod model;
pub mod quant;
pub mod sampler;
pub mod session;
pub mod source;
pub mod stream;
pub mod tokenizer;

pub use error::{Error, Result};
pub use gguf::GgufFile;
pub use model::Model;
pub use sampler::{Sampler, SamplingParams};
pub use session::Session;
pub use source::{ByteSource, MemorySource, MmapSource};
