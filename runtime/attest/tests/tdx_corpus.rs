//! Every real TDX quote in the corpus passes the signature, QE and chain checks; the quotes with
//! collateral reach the TCB status of ATTESTATION.md §3; the §4 negative cases fail by name.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use power_attest::policy::{ReferenceValueSet, TdAttributesRequirements, TdxReferenceValues};
use power_attest::tdx::{TcbStatus, TdxCollateral, TdxQuote};
use power_attest::{CheckStatus, EvidenceBundle, Policy, TeeKind};
use time::macros::datetime;

fn bundle(quote: &str, coll: Option<Vec<u8>>) -> EvidenceBundle {
    let mut b = EvidenceBundle::new(TeeKind::Tdx, data(quote));
    b.tdx_collateral = coll;
    b
}

fn pcs_collateral(tcbinfo: &str, qe: &str) -> Vec<u8> {
    let chain = String::from_utf8(data("tdx/intel-sgx-tcb-signing-chain.pem")).unwrap();
    TdxCollateral::from_pcs(
        &String::from_utf8(data(tcbinfo)).unwrap(),
        &String::from_utf8(data(qe)).unwrap(),
        &chain,
        Some(&data("tdx/root-ca-crl-gotdx.der")),
        Some(&data("tdx/pck-platform-ca-crl-gotdx.der")),
    )
    .unwrap()
    .to_json()
}

#[test]
fn every_quote_passes_signature_qe_and_chain() {
    let quotes = [
        ("tdx/quote-v4.bin", datetime!(2025-06-20 0:00 UTC), 4),
        ("tdx/quote-v5.bin", datetime!(2026-02-19 0:00 UTC), 5),
        (
            "tdx/quote-v4-trustee-00a06d080000.bin",
            datetime!(2025-10-29 0:00 UTC),
            4,
        ),
        (
            "tdx/quote-v4-spr-extra-bytes.bin",
            datetime!(2025-06-20 0:00 UTC),
            4,
        ),
        (
            "tdx/quote-v4-trustee.bin",
            datetime!(2025-06-20 0:00 UTC),
            4,
        ),
        (
            "tdx/quote-v5-trustee.bin",
            datetime!(2025-06-20 0:00 UTC),
            5,
        ),
        ("tdx/quote-v4-azure.bin", datetime!(2025-06-20 0:00 UTC), 4),
    ];
    for (q, at, ver) in quotes {
        let v = verify_at(&bundle(q, None), &Policy::default(), at);
        assert_pass(&v, TDX_EVIDENCE_CHECKS);
        // No collateral: a TCB status cannot be computed, and that fails loudly.
        assert_fail(&v, "tdx.collateral");
        assert_eq!(TdxQuote::parse(&data(q)).unwrap().version, ver, "{q}");
    }
    let spr = TdxQuote::parse(&data("tdx/quote-v4-spr-extra-bytes.bin")).unwrap();
    assert_eq!(spr.trailing_len, 39);
    assert!(spr.body.td_attributes & (1 << 30) != 0, "PKS");
    let v4 = TdxQuote::parse(&data("tdx/quote-v4.bin")).unwrap();
    assert_eq!(v4.trailing_len, 70);
    let v5 = TdxQuote::parse(&data("tdx/quote-v5.bin")).unwrap();
    assert_eq!(v5.body_type, 3);
    assert!(v5.body.mr_service_td.is_some());
}

#[test]
fn quote_v4_with_collateral_is_up_to_date() {
    let b = bundle(
        "tdx/quote-v4.bin",
        Some(data("tdx/quote-v4-collateral.json")),
    );
    let v = verify_at(&b, &Policy::default(), datetime!(2025-06-20 0:00 UTC));
    assert_pass(
        &v,
        &[
            "tdx.collateral.chain",
            "tdx.collateral.signature",
            "tdx.collateral.crl",
            "tdx.collateral.identity",
            "tdx.collateral.freshness",
            "tdx.qeIdentity",
            "tdx.module",
            "tdx.tcbStatus",
        ],
    );
    assert_eq!(v.tcb_status.as_deref(), Some("UpToDate"));
    // After nextUpdate the collateral is flagged stale.
    let v = verify_at(&b, &Policy::default(), datetime!(2025-08-01 0:00 UTC));
    assert_fail(&v, "tdx.collateral.freshness");
}

#[test]
fn quote_v5_has_no_matching_tcb_level() {
    let b = bundle(
        "tdx/quote-v5.bin",
        Some(data("tdx/quote-v5-collateral.json")),
    );
    let v = verify_at(&b, &Policy::default(), datetime!(2026-02-19 0:00 UTC));
    assert_pass(
        &v,
        &[
            "tdx.collateral.signature",
            "tdx.collateral.crl",
            "tdx.qeIdentity",
            "tdx.module",
        ],
    );
    assert_fail(&v, "tdx.tcbStatus");
    assert_eq!(v.tcb_status, None);
}

#[test]
fn trustee_quote_is_out_of_date() {
    let coll = pcs_collateral(
        "tdx/tcbinfo-00a06d080000-trustee.json",
        "tdx/qe-identity-trustee.json",
    );
    let b = bundle("tdx/quote-v4-trustee-00a06d080000.bin", Some(coll));
    let v = verify_at(&b, &Policy::default(), datetime!(2025-10-29 0:00 UTC));
    assert_pass(
        &v,
        &[
            "tdx.collateral.signature",
            "tdx.qeIdentity",
            "tdx.module",
            "tdx.tcbStatus",
        ],
    );
    assert_eq!(v.tcb_status.as_deref(), Some("OutOfDate"));
    // The only CRLs in the corpus are from 2023: stale in 2025.
    assert_fail(&v, "tdx.collateral.crl");
}

#[test]
fn spr_quote_with_2023_collateral() {
    let coll = pcs_collateral(
        "tdx/tcbinfo-50806f000000-gotdx.json",
        "tdx/qe-identity-gotdx.json",
    );
    let b = bundle("tdx/quote-v4-spr-extra-bytes.bin", Some(coll));
    let v = verify_at(&b, &Policy::default(), datetime!(2023-06-20 0:00 UTC));
    // The reissued TCB-signing certificate did not exist yet in 2023 (ATTESTATION.md §5.11):
    // strict time checking flags it; the JSON signatures still verify under its key.
    assert_fail(&v, "tdx.collateral.chain");
    assert_pass(
        &v,
        &[
            "tdx.collateral.signature",
            "tdx.collateral.crl",
            "tdx.qeIdentity",
        ],
    );
    assert_fail(&v, "tdx.tcbStatus");
}

#[test]
fn tampering_fails_the_right_signature() {
    let at = datetime!(2025-06-20 0:00 UTC);
    // REPORTDATA at 0x238.
    let mut b = bundle("tdx/quote-v4.bin", None);
    b.evidence[0x238] ^= 1;
    let v = verify_at(&b, &Policy::default(), at);
    assert_fail(&v, "tdx.signature");
    assert_eq!(status(&v, "tdx.qeSignature"), CheckStatus::Pass);
    // Inside the QE report (signature data starts after the 0x278-byte signed region + 4).
    let mut b = bundle("tdx/quote-v4.bin", None);
    let qe_report = 0x278 + 4 + 128 + 6;
    b.evidence[qe_report + 10] ^= 1;
    let v = verify_at(&b, &Policy::default(), at);
    assert_fail(&v, "tdx.qeSignature");
}

#[test]
fn collateral_tampering_and_mismatch() {
    let at = datetime!(2025-06-20 0:00 UTC);
    let mut c = TdxCollateral::from_json(&data("tdx/quote-v4-collateral.json")).unwrap();
    c.tcb_info = c.tcb_info.replacen("UpToDate", "UpToDatf", 1);
    let v = verify_at(
        &bundle("tdx/quote-v4.bin", Some(c.to_json())),
        &Policy::default(),
        at,
    );
    assert_fail(&v, "tdx.collateral.signature");
    let mut c = TdxCollateral::from_json(&data("tdx/quote-v4-collateral.json")).unwrap();
    c.qe_identity = c
        .qe_identity
        .replacen("\"isvprodid\":2", "\"isvprodid\":3", 1);
    let v = verify_at(
        &bundle("tdx/quote-v4.bin", Some(c.to_json())),
        &Policy::default(),
        at,
    );
    assert_fail(&v, "tdx.collateral.signature");
    // FMSPC of another platform.
    let coll = pcs_collateral(
        "tdx/tcbinfo-90c06f000000-gotdx.json",
        "tdx/qe-identity-gotdx.json",
    );
    let v = verify_at(
        &bundle("tdx/quote-v4.bin", Some(coll)),
        &Policy::default(),
        at,
    );
    assert_fail(&v, "tdx.collateral.identity");
}

#[test]
fn truncated_quotes_are_rejected() {
    let full = data("tdx/quote-v4.bin");
    for len in [
        0usize,
        47,
        0x278,
        0x278 + 4,
        0x278 + 200,
        1000,
        4000,
        full.len() - 71,
    ] {
        let r = TdxQuote::parse(&full[..len]);
        assert!(r.is_err(), "len {len}");
    }
    assert!(TdxQuote::parse(&full[..full.len() - 70]).is_ok());
}

fn tdx_policy(quote: &str, tweak: impl FnOnce(&mut TdxReferenceValues)) -> Policy {
    let q = TdxQuote::parse(&data(quote)).unwrap();
    let mut r = TdxReferenceValues {
        mr_td: vec![hex::encode(q.body.mr_td)],
        accepted_tcb_status: vec!["UpToDate".into(), "OutOfDate".into()],
        ..Default::default()
    };
    tweak(&mut r);
    Policy {
        reference_value_sets: vec![ReferenceValueSet {
            name: Some("td".into()),
            tdx: Some(r),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn tdx_policy_rejections() {
    let at = datetime!(2025-06-20 0:00 UTC);
    let v = verify_at(
        &bundle("tdx/quote-v4-trustee.bin", None),
        &tdx_policy("tdx/quote-v4-trustee.bin", |_| {}),
        at,
    );
    assert_fail(&v, "refset[td].tdx.tdAttributes.debug");
    let v = verify_at(
        &bundle("tdx/quote-v5-trustee.bin", None),
        &tdx_policy("tdx/quote-v5-trustee.bin", |_| {}),
        at,
    );
    assert_fail(&v, "refset[td].tdx.mrServiceTd");
    let v = verify_at(
        &bundle("tdx/quote-v4-azure.bin", None),
        &tdx_policy("tdx/quote-v4-azure.bin", |_| {}),
        at,
    );
    assert_fail(&v, "refset[td].tdx.tdAttributes.septVeDisable");
    let relaxed = tdx_policy("tdx/quote-v4-azure.bin", |r| {
        r.td_attributes = Some(TdAttributesRequirements {
            debug: false,
            sept_ve_disable: false,
        })
    });
    let v = verify_at(&bundle("tdx/quote-v4-azure.bin", None), &relaxed, at);
    assert_eq!(
        status(&v, "refset[td].tdx.tdAttributes.septVeDisable"),
        CheckStatus::Pass
    );
    let v = verify_at(
        &bundle("tdx/quote-v4.bin", None),
        &tdx_policy("tdx/quote-v4-azure.bin", |_| {}),
        at,
    );
    assert_fail(&v, "refset[td].tdx.mrTd");
    // Full positive on quote-v4 with its collateral: every check except the report_data binding.
    let b = bundle(
        "tdx/quote-v4.bin",
        Some(data("tdx/quote-v4-collateral.json")),
    );
    let v = verify_at(&b, &tdx_policy("tdx/quote-v4.bin", |_| {}), at);
    assert_eq!(v.matched_reference_set.as_deref(), Some("td"));
    let failing: Vec<_> = v.failures().map(|c| c.name.as_str()).collect();
    assert_eq!(failing, vec!["reportData.binding"], "{}", v.render_text());
    assert!(TcbStatus::UpToDate < TcbStatus::OutOfDate);
}
