//! Every real SEV-SNP report in the corpus verifies at its fixed time, and every negative case of
//! ATTESTATION.md §4 fails with the right check.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use power_attest::policy::{ReferenceValueSet, SnpReferenceValues};
use power_attest::snp::{Product, SnpReport, Tcb};
use power_attest::{CheckStatus, Policy, TeeKind};

#[test]
fn every_real_report_verifies_at_its_time() {
    for s in snp_samples() {
        let v = verify_at(&snp_bundle(s.report, s.cert), &Policy::default(), s.at);
        assert_pass(&v, SNP_EVIDENCE_CHECKS);
        let r = SnpReport::parse(&data(s.report)).unwrap();
        let chip = status(&v, "snp.chipId");
        if s.report.contains("vlek") {
            assert_eq!(chip, CheckStatus::NotChecked);
        } else {
            assert_eq!(chip, CheckStatus::Pass, "{}", s.report);
        }
        // Real reports carry someone else's report_data, and the default policy has no sets.
        assert_fail(&v, "reportData.binding");
        assert_fail(&v, "referenceValues");
        assert_eq!(
            v.measurement.as_deref(),
            Some(hex::encode(r.measurement).as_str())
        );
    }
}

/// (file, version, CPUID product, VLEK, POLICY, VMPL, REPORTED_TCB)
type Oracle = (&'static str, u32, Option<Product>, bool, u64, u32, u64);

#[test]
fn parsed_fields_match_the_oracle_table() {
    let cases: &[Oracle] = &[
        (
            "snp/milan-v2-report.bin",
            2,
            None,
            false,
            0xb0000,
            0,
            0x4405000000000002,
        ),
        (
            "snp/milan-v2-virtee-report.bin",
            2,
            None,
            false,
            0x30000,
            0,
            0x7308000000000003,
        ),
        (
            "snp/milan-v2-idblock-report.bin",
            2,
            None,
            false,
            0x3001f,
            0,
            0x7308000000000003,
        ),
        (
            "snp/milan-v3-vlek-report.bin",
            3,
            Some(Product::Milan),
            true,
            0x30000,
            1,
            0xd918000000000004,
        ),
        (
            "snp/milan-v3-report.bin",
            3,
            Some(Product::Milan),
            false,
            0x3001f,
            0,
            0xdb18000000000004,
        ),
        (
            "snp/milan-v5-gcp-report.bin",
            5,
            Some(Product::Milan),
            false,
            0x30000,
            0,
            0xde1b000000000004,
        ),
        (
            "snp/genoa-v3-report.bin",
            3,
            Some(Product::Genoa),
            false,
            0x3001f,
            0,
            0x541700000000000a,
        ),
        (
            "snp/genoa-v3-azure-report.bin",
            3,
            Some(Product::Genoa),
            false,
            0x3001f,
            0,
            0x541700000000000a,
        ),
    ];
    for (f, ver, prod, vlek, policy, vmpl, tcb) in cases {
        let r = SnpReport::parse(&data(f)).unwrap();
        assert_eq!(r.version, *ver, "{f}");
        assert_eq!(r.cpuid_product(), *prod, "{f}");
        assert_eq!(
            r.signing_key == power_attest::snp::SigningKey::Vlek,
            *vlek,
            "{f}"
        );
        assert_eq!(r.policy.0, *policy, "{f}");
        assert_eq!(r.vmpl, *vmpl, "{f}");
        assert_eq!(r.reported_tcb, *tcb, "{f}");
    }
    let idb = SnpReport::parse(&data("snp/milan-v2-idblock-report.bin")).unwrap();
    assert_ne!(idb.current_tcb, idb.reported_tcb);
    assert_eq!(Tcb::decode(idb.current_tcb, Product::Milan).microcode, 206);
    assert_eq!(Tcb::decode(idb.reported_tcb, Product::Milan).microcode, 115);
    let gcp = SnpReport::parse(&data("snp/milan-v5-gcp-report.bin")).unwrap();
    assert_eq!(gcp.launch_mit_vector, Some(0xb));
    assert_eq!(gcp.current_mit_vector, Some(0xb));
    let turin = Tcb::decode(0x5100000004010101, Product::Turin);
    assert_eq!(
        (
            turin.fmc,
            turin.bootloader,
            turin.tee,
            turin.snp,
            turin.microcode
        ),
        (Some(1), 1, 1, 4, 81)
    );
    assert_eq!(turin.encode(Product::Turin), 0x5100000004010101);
    let milan = Tcb::decode(0x7308000000000003, Product::Milan);
    assert_eq!(
        (milan.bootloader, milan.tee, milan.snp, milan.microcode),
        (3, 0, 8, 115)
    );
}

#[test]
fn flipped_signed_bit_fails_the_signature() {
    for off in [0x90usize, 21, 0x50, 0x180] {
        let mut b = snp_bundle("snp/milan-v3-report.bin", "snp/milan-v3-vcek.pem");
        b.evidence[off] ^= 0x01;
        let v = verify_at(&b, &Policy::default(), VCEK_TIME);
        assert_fail(&v, "snp.signature");
    }
}

#[test]
fn wrong_chain_fails() {
    // Milan VCEK against the Genoa ASK/ARK.
    let (ask, ark) = chain("snp/genoa-ask-ark.pem");
    let mut b = snp_bundle("snp/milan-v3-report.bin", "snp/milan-v3-vcek.pem");
    b.intermediate_cert = Some(ask.clone());
    b.root_cert = Some(ark);
    assert_fail(&verify_at(&b, &Policy::default(), VCEK_TIME), "snp.ark");
    // Genoa ASK under the (pinned) Milan ARK.
    b.root_cert = None;
    b.intermediate_cert = Some(ask);
    assert_fail(&verify_at(&b, &Policy::default(), VCEK_TIME), "snp.chain");
    // VLEK against the VCEK chain (ASK instead of ASVK).
    let (ask, _) = chain("snp/milan-ask-ark.pem");
    let mut b = snp_bundle("snp/milan-v3-vlek-report.bin", "snp/milan-v3-vlek.der");
    b.intermediate_cert = Some(ask);
    assert_fail(&verify_at(&b, &Policy::default(), VLEK_TIME), "snp.chain");
}

#[test]
fn vcek_of_another_report_fails_signature_and_hwid() {
    let b = snp_bundle("snp/milan-v3-report.bin", "snp/milan-v5-gcp-vcek.pem");
    let v = verify_at(&b, &Policy::default(), VCEK_TIME);
    assert_fail(&v, "snp.signature");
    assert_fail(&v, "snp.chipId");
}

#[test]
fn truncation_and_bad_layouts_are_rejected() {
    let full = data("snp/milan-v3-report.bin");
    for len in [0usize, 1, 0x2A0, 0x49F] {
        let mut b = snp_bundle("snp/milan-v3-report.bin", "snp/milan-v3-vcek.pem");
        b.evidence = full[..len].to_vec();
        assert_fail(&verify_at(&b, &Policy::default(), VCEK_TIME), "snp.report");
    }
    let mut longer = full.clone();
    longer.push(0);
    assert!(SnpReport::parse(&longer).is_err());
    let mut v4 = full.clone();
    v4[0] = 4;
    assert!(
        SnpReport::parse(&v4)
            .unwrap_err()
            .to_string()
            .contains("VERSION")
    );
    let mut algo = full.clone();
    algo[0x34] = 2;
    assert!(
        SnpReport::parse(&algo)
            .unwrap_err()
            .to_string()
            .contains("SIGNATURE_ALGO")
    );
    let mut unsigned = full.clone();
    unsigned[0x48] = 7 << 2;
    assert!(SnpReport::parse(&unsigned).is_err());
    let mut reserved = full.clone();
    reserved[0x4C] = 1;
    assert!(
        SnpReport::parse(&reserved)
            .unwrap_err()
            .to_string()
            .contains("0x4c")
    );
    let mut pad = full;
    pad[0x400] = 1;
    assert!(SnpReport::parse(&pad).is_err());
}

#[test]
fn certificate_time_checks() {
    // The VLEK expired on 2025-12-10.
    let b = snp_bundle("snp/milan-v3-vlek-report.bin", "snp/milan-v3-vlek.der");
    assert_fail(
        &verify_at(&b, &Policy::default(), VCEK_TIME),
        "snp.validity",
    );
    // Before any VCEK was issued.
    let b = snp_bundle("snp/milan-v3-report.bin", "snp/milan-v3-vcek.pem");
    assert_fail(
        &verify_at(
            &b,
            &Policy::default(),
            time::macros::datetime!(2019-01-01 0:00 UTC),
        ),
        "snp.validity",
    );
}

fn policy_for(report: &str, tweak: impl FnOnce(&mut SnpReferenceValues)) -> Policy {
    let r = SnpReport::parse(&data(report)).unwrap();
    let mut refs = SnpReferenceValues {
        measurements: vec![hex::encode(r.measurement)],
        ..Default::default()
    };
    tweak(&mut refs);
    Policy {
        reference_value_sets: vec![ReferenceValueSet {
            name: Some("prod".into()),
            snp: Some(refs),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn policy_rejections_name_the_check() {
    // DEBUG = 1.
    let b = snp_bundle("snp/milan-v2-report.bin", "snp/milan-v2-vcek.der");
    let v = verify_at(
        &b,
        &policy_for("snp/milan-v2-report.bin", |_| {}),
        VCEK_TIME,
    );
    assert_fail(&v, "refset[prod].snp.guestPolicy.debug");
    // VMPL 1 where 0 is required.
    let b = snp_bundle("snp/milan-v3-vlek-report.bin", "snp/milan-v3-vlek.der");
    let v = verify_at(
        &b,
        &policy_for("snp/milan-v3-vlek-report.bin", |_| {}),
        VLEK_TIME,
    );
    assert_fail(&v, "refset[prod].snp.vmpl");
    let v = verify_at(
        &b,
        &policy_for("snp/milan-v3-vlek-report.bin", |r| r.vmpl = Some(1)),
        VLEK_TIME,
    );
    assert_eq!(status(&v, "refset[prod].snp.vmpl"), CheckStatus::Pass);
    // Measurement not in the set.
    let b = snp_bundle("snp/milan-v3-report.bin", "snp/milan-v3-vcek.pem");
    let v = verify_at(
        &b,
        &policy_for("snp/milan-v5-gcp-report.bin", |_| {}),
        VCEK_TIME,
    );
    assert_fail(&v, "refset[prod].snp.measurement");
    // Minimum TCB above the committed TCB.
    let v = verify_at(
        &b,
        &policy_for("snp/milan-v3-report.bin", |r| {
            r.minimum_tcb = Some(power_attest::policy::MinimumTcb {
                microcode: 255,
                ..Default::default()
            })
        }),
        VCEK_TIME,
    );
    assert_fail(&v, "refset[prod].snp.minimumTcb.committed");
    // Chip not allowed.
    let v = verify_at(
        &b,
        &policy_for("snp/milan-v3-report.bin", |r| {
            r.chip_ids = vec!["00".repeat(64)]
        }),
        VCEK_TIME,
    );
    assert_fail(&v, "refset[prod].snp.chipIDs");
}

#[test]
fn a_matching_set_with_the_right_binding_passes_end_to_end() {
    // A real report only binds its own report_data: use it as the expectation's first half by
    // checking everything else, then show the deny-list overrides a match.
    let b = snp_bundle("snp/milan-v3-report.bin", "snp/milan-v3-vcek.pem");
    let mut p = policy_for("snp/milan-v3-report.bin", |r| {
        r.minimum_tcb = Some(power_attest::policy::MinimumTcb {
            bootloader: 4,
            snp: 24,
            microcode: 200,
            tee: 0,
            fmc: None,
        })
    });
    let v = verify_at(&b, &p, VCEK_TIME);
    assert_eq!(v.matched_reference_set.as_deref(), Some("prod"));
    assert_eq!(status(&v, "referenceValues"), CheckStatus::Pass);
    assert_fail(&v, "reportData.binding");
    let m = SnpReport::parse(&data("snp/milan-v3-report.bin"))
        .unwrap()
        .measurement;
    p.deny_list.measurements.push(hex::encode(m));
    assert_fail(&verify_at(&b, &p, VCEK_TIME), "denyList.measurements");
    assert_eq!(b.kind, TeeKind::SevSnp);
}

#[test]
fn bundled_ark_must_be_the_pinned_one() {
    let (ask, ark) = chain("snp/milan-ask-ark.pem");
    let mut b = snp_bundle("snp/milan-v3-report.bin", "snp/milan-v3-vcek.pem");
    b.intermediate_cert = Some(ask);
    b.root_cert = Some(ark);
    assert_pass(
        &verify_at(&b, &Policy::default(), VCEK_TIME),
        SNP_EVIDENCE_CHECKS,
    );
}
