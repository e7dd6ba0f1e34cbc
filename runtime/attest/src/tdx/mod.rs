//! Intel TDX: quote v4/v5 layout, PCS collateral, verification to the pinned Intel SGX Root CA.

pub mod collateral;
pub mod quote;
pub mod verify;

pub use collateral::{TcbStatus, TdxCollateral};
pub use quote::TdxQuote;

/// SHA-256 of the DER of the pinned "Intel SGX Root CA".
pub const INTEL_ROOT_SHA256: &str =
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";
/// The pinned root certificate (DER).
pub const INTEL_ROOT_DER: &[u8] = include_bytes!("../../roots/intel-sgx-root-ca.der");
