//! Every OID and domain-separation tag this crate uses, in one place.

/// RA-TLS evidence-bundle extension (non-critical) in our self-signed TLS certificate.
pub const RA_TLS_EVIDENCE: &str = "1.3.6.1.4.1.56560.1.1";
/// The same OID as integer arcs (for rcgen).
pub const RA_TLS_EVIDENCE_ARCS: &[u64] = &[1, 3, 6, 1, 4, 1, 56560, 1, 1];

/// Domain-separation tag of `report_data[0..32]` (DESIGN §3.2).
pub const REPORT_DATA_TAG: &[u8] = b"a3s-power/attest/v1";
/// Domain-separation tag of the Ed25519 model seal message (DESIGN §3.5).
pub const MODEL_SEAL_TAG: &[u8] = b"a3s-power/model/v1";
/// Seed tag of the simulated (development) AMD-style chain.
pub const SIMULATED_SEED_TAG: &[u8] = b"a3s-power/simulated/v1";

/// AMD VCEK/VLEK certificate extensions (AMD doc 57230).
pub mod amd {
    pub const STRUCT_VERSION: &str = "1.3.6.1.4.1.3704.1.1";
    pub const PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
    pub const BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
    pub const TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
    pub const SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
    pub const UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
    pub const FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
    pub const HW_ID: &str = "1.3.6.1.4.1.3704.1.4";
    pub const CSP_ID: &str = "1.3.6.1.4.1.3704.1.5";
}

/// Intel SGX PCK certificate extensions (SGX PCK Certificate and CRL Profile).
pub mod intel {
    pub const SGX_EXTENSIONS: &str = "1.2.840.113741.1.13.1";
    pub const TCB: &str = "1.2.840.113741.1.13.1.2";
    pub const PCESVN: &str = "1.2.840.113741.1.13.1.2.17";
    pub const CPUSVN: &str = "1.2.840.113741.1.13.1.2.18";
    pub const PCE_ID: &str = "1.2.840.113741.1.13.1.3";
    pub const FMSPC: &str = "1.2.840.113741.1.13.1.4";
    /// Prefix of the 16 SGX TCB component SVN OIDs (`.1` … `.16`).
    pub const TCB_COMP_PREFIX: &str = "1.2.840.113741.1.13.1.2.";
}

/// Algorithm OIDs checked on certificate signatures.
pub mod alg {
    pub const RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
    pub const SHA384: &str = "2.16.840.1.101.3.4.2.2";
    pub const MGF1: &str = "1.2.840.113549.1.1.8";
    pub const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
    pub const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
    pub const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
    pub const SECP384R1: &str = "1.3.132.0.34";
    pub const PRIME256V1: &str = "1.2.840.10045.3.1.7";
    pub const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
}
