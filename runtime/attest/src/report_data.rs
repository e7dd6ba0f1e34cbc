//! The 64-byte report_data binding (DESIGN §3.2):
//!
//! ```text
//! report_data[0..32]  = SHA-256("a3s-power/attest/v1" || 0x00 || nonce[32] || tls_spki_sha256[32])
//! report_data[32..64] = model_sha256   (zeros when no model is bound)
//! ```

use sha2::{Digest, Sha256};

use crate::oids::REPORT_DATA_TAG;

/// The inputs bound into report_data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportData {
    /// The verifier's 32 random bytes (zeros inside an RA-TLS certificate).
    pub nonce: [u8; 32],
    /// SHA-256 of the DER SubjectPublicKeyInfo of the served TLS certificate (zeros without TLS).
    pub tls_spki_sha256: [u8; 32],
    /// SHA-256 of the plaintext model (zeros when no model is bound).
    pub model_sha256: [u8; 32],
}

impl ReportData {
    /// The first half: freshness and TLS-key binding.
    pub fn binding(&self) -> [u8; 32] {
        binding_hash(&self.nonce, &self.tls_spki_sha256)
    }
    /// The 64 bytes placed in the hardware report.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.binding());
        out[32..].copy_from_slice(&self.model_sha256);
        out
    }
}

/// `SHA-256(tag || 0 || nonce || spki_sha256)`.
pub fn binding_hash(nonce: &[u8; 32], tls_spki_sha256: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(REPORT_DATA_TAG);
    h.update([0u8]);
    h.update(nonce);
    h.update(tls_spki_sha256);
    h.finalize().into()
}

/// SHA-256 of a DER SubjectPublicKeyInfo.
pub fn spki_sha256(spki_der: &[u8]) -> [u8; 32] {
    Sha256::digest(spki_der).into()
}
