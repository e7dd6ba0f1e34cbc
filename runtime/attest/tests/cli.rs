//! The `a3s-power-verify` binary, offline on real and simulated evidence.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_a3s-power-verify"))
}

/// `content` written to `name` in `dir` (a test's own directory, removed when it ends).
fn tmp(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn offline_real_report_lists_checks_and_fails_on_binding() {
    let dir = tempfile::tempdir().unwrap();
    let report = power_attest::snp::SnpReport::parse(&data("snp/milan-v3-report.bin")).unwrap();
    let policy = tmp(
        &dir,
        "p1.json",
        format!(
            r#"{{"referenceValueSets":[{{"name":"ms","snp":{{"measurements":["{}"]}}}}]}}"#,
            hex::encode(report.measurement)
        )
        .as_bytes(),
    );
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = bin()
        .args([
            "report",
            &format!("{dir}/testdata/snp/milan-v3-report.bin"),
            "--certs",
            &format!("{dir}/testdata/snp/milan-v3-vcek.pem"),
            "--at",
            "2026-03-01T00:00:00Z",
            "--policy",
        ])
        .arg(&policy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("PASS  snp.signature"), "{text}");
    assert!(text.contains("PASS  refset[ms].snp.measurement"), "{text}");
    assert!(text.contains("FAIL  reportData.binding"), "{text}");
    // --json is machine readable.
    let out = bin()
        .args([
            "report",
            &format!("{dir}/testdata/snp/milan-v3-report.bin"),
            "--certs",
            &format!("{dir}/testdata/snp/milan-v3-vcek.pem"),
            "--at",
            "2026-03-01T00:00:00Z",
            "--json",
            "--policy",
        ])
        .arg(&policy)
        .output()
        .unwrap();
    let v: power_attest::Verdict = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!v.passed);
    assert!(v.checks.iter().any(|c| c.name == "snp.chain" && c.passed()));
}

#[test]
fn offline_simulated_bundle_passes_and_bad_policy_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let auth = power_attest::simulated::SimulatedAuthority::default_authority().unwrap();
    let rd = power_attest::ReportData {
        nonce: [3; 32],
        tls_spki_sha256: [0; 32],
        model_sha256: [9; 32],
    };
    let b = auth.bundle(&rd.to_bytes(), &[1; 48]);
    let doc = power_attest::AttestationDocument::from_bundle(&b, &rd, None);
    let f = tmp(&dir, "doc.json", &serde_json::to_vec(&doc).unwrap());
    let policy = tmp(
        &dir,
        "p2.json",
        format!(r#"{{"allowSimulated":true,"referenceValueSets":[{{"simulated":{{"measurements":["{}"]}}}}]}}"#, hex::encode([1u8; 48])).as_bytes(),
    );
    let run = |nonce: &str| {
        bin()
            .arg("report")
            .arg(&f)
            .args([
                "--nonce",
                nonce,
                "--model-sha256",
                &hex::encode([9u8; 32]),
                "--policy",
            ])
            .arg(&policy)
            .output()
            .unwrap()
    };
    let ok = run(&hex::encode([3u8; 32]));
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let bad = run(&hex::encode([4u8; 32]));
    assert_eq!(bad.status.code(), Some(1));
    let bad_policy = tmp(
        &dir,
        "p3.json",
        br#"{"referenceValueSets":[{"snp":{"measurements":["zz"]}}]}"#,
    );
    let out = bin()
        .arg("report")
        .arg(&f)
        .arg("--policy")
        .arg(&bad_policy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("referenceValueSets[0].snp.measurements[0]")
    );
}
