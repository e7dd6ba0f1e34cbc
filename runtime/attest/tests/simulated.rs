//! Simulated evidence runs the production SNP path under the development root and is accepted
//! only where the policy allows it.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use power_attest::policy::{ReferenceValueSet, SimulatedReferenceValues};
use power_attest::simulated::{DEV_ARK_SHA256, SimulatedAuthority};
use power_attest::{CheckStatus, EvidenceBundle, Expectations, Policy, ReportData, TeeKind};
use time::macros::datetime;

const NOW: time::OffsetDateTime = datetime!(2026-06-01 12:00 UTC);
const MEAS: [u8; 48] = [7u8; 48];

fn setup() -> (EvidenceBundle, Expectations, Policy) {
    let auth = SimulatedAuthority::default_authority().unwrap();
    let rd = ReportData {
        nonce: [1; 32],
        tls_spki_sha256: [2; 32],
        model_sha256: [3; 32],
    };
    let bundle = auth.bundle(&rd.to_bytes(), &MEAS);
    let exp = Expectations {
        nonce: [1; 32],
        tls_spki_sha256: [2; 32],
        model_sha256: Some([3; 32]),
        nonce_issued_at: Some(NOW - time::Duration::seconds(5)),
    };
    let policy = Policy {
        allow_simulated: true,
        reference_value_sets: vec![ReferenceValueSet {
            name: Some("dev".into()),
            simulated: Some(SimulatedReferenceValues {
                measurements: vec![hex::encode(MEAS)],
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    (bundle, exp, policy)
}

#[test]
fn the_default_chain_is_deterministic_and_pinned() {
    let a = SimulatedAuthority::default_authority().unwrap();
    assert_eq!(power_attest::x509::fingerprint(&a.ark_der), DEV_ARK_SHA256);
    let again = SimulatedAuthority::from_seed(power_attest::simulated::DEFAULT_SEED).unwrap();
    assert_eq!(again.vcek_der, a.vcek_der);
    let other = SimulatedAuthority::from_seed(b"another seed").unwrap();
    assert_ne!(other.ark_der, a.ark_der);
}

#[test]
fn simulated_evidence_passes_when_allowed() {
    let (b, exp, policy) = setup();
    let v = power_attest::verify(&b, &exp, &policy, NOW);
    assert!(v.passed, "{}", v.render_text());
    assert!(v.accepted);
    assert_eq!(v.reason(), "AttestationSucceeded");
    assert_eq!(v.matched_reference_set.as_deref(), Some("dev"));
    assert_pass(&v, SNP_EVIDENCE_CHECKS);
    assert_pass(
        &v,
        &[
            "snp.chipId",
            "reportData.binding",
            "reportData.model",
            "evidence.age",
            "simulated.allowed",
        ],
    );
    // Survives the wire format.
    let b2 = EvidenceBundle::decode(&b.encode()).unwrap();
    assert_eq!(b2, b);
}

#[test]
fn simulated_evidence_is_refused_by_default() {
    let (b, exp, mut policy) = setup();
    policy.allow_simulated = false;
    let v = power_attest::verify(&b, &exp, &policy, NOW);
    assert_fail(&v, "simulated.allowed");
    assert_eq!(v.reason(), "SimulatedNotAllowed");
    assert!(!v.accepted);
    // Audit mode reports the failure but accepts.
    policy.enforcement = power_attest::policy::Enforcement::Audit;
    let v = power_attest::verify(&b, &exp, &policy, NOW);
    assert!(!v.passed && v.accepted);
}

#[test]
fn simulated_evidence_cannot_pose_as_hardware_and_vice_versa() {
    let (mut b, exp, policy) = setup();
    b.kind = TeeKind::SevSnp;
    let v = power_attest::verify(&b, &exp, &policy, NOW);
    assert_fail(&v, "snp.ark");
    // A real AMD report labelled simulated does not chain to the development root.
    let mut real = snp_bundle("snp/milan-v3-report.bin", "snp/milan-v3-vcek.pem");
    real.kind = TeeKind::Simulated;
    let v = power_attest::verify(&real, &exp, &policy, VCEK_TIME);
    assert_fail(&v, "snp.ark");
}

#[test]
fn binding_model_measurement_and_age_are_enforced() {
    let (b, exp, policy) = setup();
    let v = power_attest::verify(
        &b,
        &Expectations {
            nonce: [9; 32],
            ..exp
        },
        &policy,
        NOW,
    );
    assert_fail(&v, "reportData.binding");
    assert_eq!(v.reason(), "ReportDataMismatch");
    let v = power_attest::verify(
        &b,
        &Expectations {
            tls_spki_sha256: [0; 32],
            ..exp
        },
        &policy,
        NOW,
    );
    assert_fail(&v, "reportData.binding");
    let v = power_attest::verify(
        &b,
        &Expectations {
            model_sha256: Some([4; 32]),
            ..exp
        },
        &policy,
        NOW,
    );
    assert_fail(&v, "reportData.model");
    assert_eq!(v.reason(), "ModelDigestMismatch");
    let v = power_attest::verify(&b, &exp, &policy, NOW + time::Duration::minutes(10));
    assert_fail(&v, "evidence.age");
    assert_eq!(v.reason(), "EvidenceTooOld");
    let mut p2 = policy.clone();
    p2.reference_value_sets[0]
        .simulated
        .as_mut()
        .unwrap()
        .measurements = vec!["00".repeat(48)];
    let v = power_attest::verify(&b, &exp, &p2, NOW);
    assert_fail(&v, "refset[dev].simulated.measurement");
    assert_eq!(v.reason(), "MeasurementMismatch");
    let mut p3 = policy.clone();
    p3.deny_list.model_sha256 = vec![hex::encode([3u8; 32])];
    let v = power_attest::verify(&b, &exp, &p3, NOW);
    assert_fail(&v, "denyList.modelSha256");
    assert_eq!(v.reason(), "ModelDenied");
    // Tampering with the simulated report breaks the signature like on hardware.
    let mut t = b.clone();
    t.evidence[0x90] ^= 1;
    assert_fail(
        &power_attest::verify(&t, &exp, &policy, NOW),
        "snp.signature",
    );
    assert_eq!(
        status(
            &power_attest::verify(&b, &exp, &policy, NOW),
            "snp.signature"
        ),
        CheckStatus::Pass
    );
}

#[test]
fn openssl_accepts_the_development_chain() {
    // Independent check of our DER writer and RSA-PSS signatures.
    let a = SimulatedAuthority::default_authority().unwrap();
    let dir = std::env::temp_dir().join(format!("a3s-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = |der: &[u8]| {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    };
    std::fs::write(dir.join("ark.pem"), pem(&a.ark_der)).unwrap();
    std::fs::write(dir.join("ask.pem"), pem(&a.ask_der)).unwrap();
    std::fs::write(dir.join("vcek.pem"), pem(&a.vcek_der)).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-no-CAfile", "-no-CApath", "-CAfile"])
        .arg(dir.join("ark.pem"))
        .arg("-untrusted")
        .arg(dir.join("ask.pem"))
        .arg(dir.join("vcek.pem"))
        .output()
        .expect("openssl must be installed for this test");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success() && text.contains("vcek.pem: OK"),
        "{text}"
    );
}
