//! `a3s-power`: the A3S Power runtime as a library — configuration, model store and pulls, the
//! OpenAI API over picolm's engine, privacy, metrics, audit and attestation transports. The
//! binary (`main.rs`) only parses arguments and calls into it.

pub mod api;
pub mod audit;
pub mod config;
pub mod encrypted;
pub mod error;
pub mod lifecycle;
pub mod metrics;
pub mod output;
pub mod privacy;
pub mod pull;
pub mod server;
pub mod state;
pub mod store;
pub mod worker;

pub use config::Config;
pub use error::{Error, Result};
