//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the stable random-mutation test
//! (`tests/fuzz_mutation.rs`): each feeds untrusted bytes to a parser and must never panic.

use time::OffsetDateTime;

use crate::TeeKind;
use crate::evidence::EvidenceBundle;
use crate::policy::Policy;
use crate::verify::{Expectations, verify};

const AT: i64 = 1_772_323_200; // 2026-03-01

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(AT).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// SNP report bytes through the parser and the whole verifier; `leaf` (a VCEK DER) lets the
/// mutated report reach the chain, signature and TCB-binding code.
pub fn snp_report(data: &[u8], leaf: Option<&[u8]>) {
    let _ = crate::snp::SnpReport::parse(data);
    let mut b = EvidenceBundle::new(TeeKind::SevSnp, data.to_vec());
    b.leaf_cert = leaf.map(<[u8]>::to_vec);
    let _ = verify(&b, &Expectations::default(), &Policy::default(), now());
}

/// TDX quote bytes through the parser and the verifier.
pub fn tdx_quote(data: &[u8]) {
    let _ = crate::tdx::TdxQuote::parse(data);
    let b = EvidenceBundle::new(TeeKind::Tdx, data.to_vec());
    let _ = verify(&b, &Expectations::default(), &Policy::default(), now());
}

/// Extension-value parsers and certificate-carried containers.
pub fn cert_extensions(data: &[u8]) {
    let _ = crate::snp::amd::parse_amd_extension_values([
        (crate::oids::amd::BL_SPL, data),
        (crate::oids::amd::PRODUCT_NAME, data),
        (crate::oids::amd::HW_ID, data),
    ]);
    let _ = crate::tdx::collateral::parse_pck_extensions(data);
    let _ = crate::ratls::parse_ra_tls_cert(data);
    let _ = crate::attester::parse_snp_cert_table(data);
    let _ = crate::x509::pem_certs("fuzz", data);
}

/// Encrypted-model header.
pub fn enc_header(data: &[u8]) {
    if let Ok(h) = crate::model_crypt::Header::parse(data) {
        let _ = h.file_len();
    }
}

/// Evidence bundle container and the JSON document around it.
pub fn evidence_bundle(data: &[u8]) {
    if let Ok(b) = EvidenceBundle::decode(data) {
        let _ = verify(&b, &Expectations::default(), &Policy::default(), now());
    }
    if let Ok(d) = serde_json::from_slice::<crate::AttestationDocument>(data) {
        let _ = d.bundle();
    }
    let _ = crate::tdx::TdxCollateral::from_json(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Policy::from_json(s);
    }
}
