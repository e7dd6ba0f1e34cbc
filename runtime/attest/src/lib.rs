//! # power-attest
//!
//! The trust contract shared by the A3S Power runtime, the operator and every client:
//!
//! - evidence formats: the SEV-SNP ATTESTATION_REPORT ([`snp`]), TDX quotes v4/v5 ([`tdx`]) and
//!   simulated evidence ([`simulated`]: the real SNP layout under a development chain), carried in
//!   an [`evidence::EvidenceBundle`];
//! - guest-side providers behind one [`attester::Attester`] trait;
//! - verification ([`verify()`]) against a [`policy::Policy`] producing a [`verdict::Verdict`]
//!   that lists every check with expected and actual values;
//! - AMD KDS certificates, fetched and cached on disk ([`kds`]);
//! - the report_data binding ([`report_data`]), RA-TLS certificates and a rustls verifier
//!   ([`ratls`]);
//! - model sealing ([`model_seal`]) and chunked AES-256-GCM encrypted models ([`model_crypt`]).
//!
//! The core is synchronous and has no HTTP server and no engine. Verification takes the time as a
//! parameter: collateral and certificates expire.

pub mod asn1;
pub mod attester;
pub mod error;
pub mod evidence;
mod fetch;
pub mod fuzzing;
pub mod kds;
pub mod model_crypt;
pub mod model_seal;
pub mod oids;
pub mod online;
pub mod policy;
pub mod ratls;
mod reader;
pub mod report_data;
pub mod simulated;
pub mod snp;
pub mod tdx;
pub mod verdict;
pub mod verify;
pub mod x509;

pub use error::{Error, Result};
pub use evidence::{AttestationDocument, EvidenceBundle};
pub use policy::Policy;
pub use report_data::ReportData;
pub use verdict::{Check, CheckStatus, Verdict};
pub use verify::{Expectations, verify, verify_with_kds};

use serde::{Deserialize, Serialize};

/// The kind of trusted execution environment that produced evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TeeKind {
    #[serde(rename = "sev-snp")]
    SevSnp,
    #[serde(rename = "tdx")]
    Tdx,
    #[serde(rename = "simulated")]
    Simulated,
}

impl TeeKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            TeeKind::SevSnp => 1,
            TeeKind::Tdx => 2,
            TeeKind::Simulated => 3,
        }
    }
    pub(crate) fn from_code(c: u8) -> Option<TeeKind> {
        match c {
            1 => Some(TeeKind::SevSnp),
            2 => Some(TeeKind::Tdx),
            3 => Some(TeeKind::Simulated),
            _ => None,
        }
    }
    /// The name used in policies, JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            TeeKind::SevSnp => "sev-snp",
            TeeKind::Tdx => "tdx",
            TeeKind::Simulated => "simulated",
        }
    }
}

impl std::fmt::Display for TeeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
