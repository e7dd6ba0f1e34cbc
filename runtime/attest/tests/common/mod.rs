#![allow(dead_code, clippy::unwrap_used)]
//! Shared test fixtures: the real corpus in `testdata/` (see testdata/PROVENANCE.md).

use power_attest::{CheckStatus, EvidenceBundle, Expectations, Policy, TeeKind, Verdict};
use time::OffsetDateTime;
use time::macros::datetime;

pub fn data(rel: &str) -> Vec<u8> {
    let p = format!("{}/testdata/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// DER of a certificate file (.der or single-cert .pem).
pub fn cert(rel: &str) -> Vec<u8> {
    let raw = data(rel);
    if rel.ends_with(".pem") {
        power_attest::x509::pem_certs(rel, &raw).unwrap().remove(0)
    } else {
        raw
    }
}

/// (ASK-or-ASVK, ARK) DER from a chain PEM.
pub fn chain(rel: &str) -> (Vec<u8>, Vec<u8>) {
    let mut v = power_attest::x509::pem_certs(rel, &data(rel)).unwrap();
    let ark = v.remove(1);
    (v.remove(0), ark)
}

#[derive(Debug)]
pub struct SnpSample {
    pub report: &'static str,
    pub cert: &'static str,
    pub at: OffsetDateTime,
}

pub const VCEK_TIME: OffsetDateTime = datetime!(2026-03-01 00:00 UTC);
pub const VLEK_TIME: OffsetDateTime = datetime!(2025-06-01 00:00 UTC);

pub fn snp_samples() -> Vec<SnpSample> {
    let s = |report, cert, at| SnpSample { report, cert, at };
    vec![
        s(
            "snp/milan-v2-report.bin",
            "snp/milan-v2-vcek.der",
            VCEK_TIME,
        ),
        s(
            "snp/milan-v2-virtee-report.bin",
            "snp/milan-v2-virtee-vcek.der",
            VCEK_TIME,
        ),
        s(
            "snp/milan-v2-idblock-report.bin",
            "snp/milan-v2-idblock-vcek.der",
            VCEK_TIME,
        ),
        s(
            "snp/milan-v3-vlek-report.bin",
            "snp/milan-v3-vlek.der",
            VLEK_TIME,
        ),
        s(
            "snp/milan-v3-report.bin",
            "snp/milan-v3-vcek.pem",
            VCEK_TIME,
        ),
        s(
            "snp/milan-v5-gcp-report.bin",
            "snp/milan-v5-gcp-vcek.pem",
            VCEK_TIME,
        ),
        s(
            "snp/genoa-v3-report.bin",
            "snp/genoa-v3-vcek.pem",
            VCEK_TIME,
        ),
        s(
            "snp/genoa-v3-azure-report.bin",
            "snp/genoa-v3-azure-vcek.pem",
            VCEK_TIME,
        ),
    ]
}

pub fn snp_bundle(report: &str, cert_path: &str) -> EvidenceBundle {
    let mut b = EvidenceBundle::new(TeeKind::SevSnp, data(report));
    b.leaf_cert = Some(cert(cert_path));
    b
}

pub fn status(v: &Verdict, name: &str) -> CheckStatus {
    v.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {}", v.render_text()))
        .status
}

pub fn assert_pass(v: &Verdict, names: &[&str]) {
    for n in names {
        assert_eq!(status(v, n), CheckStatus::Pass, "{n}\n{}", v.render_text());
    }
}

pub fn assert_fail(v: &Verdict, name: &str) {
    assert_eq!(
        status(v, name),
        CheckStatus::Fail,
        "{name}\n{}",
        v.render_text()
    );
    assert!(!v.passed);
}

pub fn verify_at(b: &EvidenceBundle, policy: &Policy, at: OffsetDateTime) -> Verdict {
    power_attest::verify(b, &Expectations::default(), policy, at)
}

pub const SNP_EVIDENCE_CHECKS: &[&str] = &[
    "snp.report",
    "snp.certificates",
    "snp.product",
    "snp.ark",
    "snp.chain",
    "snp.validity",
    "snp.signature",
    "snp.reportedTcb",
];

pub const TDX_EVIDENCE_CHECKS: &[&str] = &[
    "tdx.quote",
    "tdx.pckChain",
    "tdx.validity",
    "tdx.qeSignature",
    "tdx.qeBinding",
    "tdx.signature",
];
