//! The crate's single error type.

/// Every failure `power-attest` can report. Messages name the field or offset involved,
/// what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Untrusted bytes did not match the expected layout.
    #[error("malformed {what} at offset {offset:#x}: {reason}")]
    Malformed {
        what: &'static str,
        offset: usize,
        reason: String,
    },
    /// Input too short for a field.
    #[error(
        "truncated {what}: field `{field}` needs bytes {start:#x}..{end:#x}, only {len:#x} present"
    )]
    Truncated {
        what: &'static str,
        field: &'static str,
        start: usize,
        end: usize,
        len: usize,
    },
    /// A certificate or CRL could not be parsed or used.
    #[error("certificate {which}: {reason}")]
    Certificate { which: String, reason: String },
    /// A cryptographic signature did not verify.
    #[error("signature of {what} does not verify: {reason}")]
    Signature { what: String, reason: String },
    /// Collateral (TCB Info, QE Identity, CRL) was unusable.
    #[error("collateral {what}: {reason}")]
    Collateral { what: String, reason: String },
    /// A policy document was invalid.
    #[error("policy field `{field}`: {reason}")]
    Policy { field: String, reason: String },
    /// Encrypted model file problem.
    #[error("encrypted model: {0}")]
    Encrypted(String),
    /// Model seal (signature file) problem.
    #[error("model seal: {0}")]
    Seal(String),
    /// A key could not be loaded or was of the wrong shape.
    #[error("key {source_name}: {reason}")]
    Key { source_name: String, reason: String },
    /// No attestation capability is available on this machine.
    #[error("no TEE available: {0}")]
    NoTee(String),
    /// A hex string was wrong.
    #[error("field `{field}`: expected {expected} hex characters, got {reason}")]
    Hex {
        field: String,
        expected: usize,
        reason: String,
    },
    /// RA-TLS certificate problem.
    #[error("RA-TLS: {0}")]
    RaTls(String),
    /// Fetching collateral or evidence over the network failed.
    #[error("fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    /// An RA-TLS server's certificate evidence failed the policy: the handshake was aborted.
    /// The verdict says which checks failed.
    #[error("{url}: RA-TLS handshake refused: {}", verdict.message())]
    Refused {
        url: String,
        verdict: Box<crate::verdict::Verdict>,
    },
    /// An I/O error with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }
    pub(crate) fn malformed(what: &'static str, offset: usize, reason: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            offset,
            reason: reason.into(),
        }
    }
    pub(crate) fn cert(which: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Certificate {
            which: which.into(),
            reason: reason.to_string(),
        }
    }
    pub(crate) fn sig(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Signature {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
    pub(crate) fn collateral(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Collateral {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// Decode exactly `N` bytes of hex, naming `field` on error.
pub fn parse_hex<const N: usize>(field: &str, s: &str) -> Result<[u8; N]> {
    let s = s.trim();
    if s.len() != 2 * N {
        return Err(Error::Hex {
            field: field.to_string(),
            expected: 2 * N,
            reason: format!("{} characters", s.len()),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| Error::Hex {
        field: field.to_string(),
        expected: 2 * N,
        reason: e.to_string(),
    })?;
    Ok(out)
}
