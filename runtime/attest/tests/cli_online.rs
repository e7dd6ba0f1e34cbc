//! `a3s-power-verify --url`: the real binary against an in-process RA-TLS HTTPS server (simulated
//! attester, the library's `ratls::issue`) serving `GET /v1/attestation?nonce=..&model=..`.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use power_attest::attester::{Attester, SimulatedAttester};
use power_attest::{AttestationDocument, CheckStatus, ReportData, Verdict};
use time::OffsetDateTime;

const MEAS: [u8; 48] = [0x42; 48];
const MODEL: [u8; 32] = [0xAB; 32];
const MODEL_NAME: &str = "tiny-qwen2";

/// An RA-TLS server answering `GET /v1/attestation` like `a3s-power serve` (404 for an unknown
/// model, 400 for a bad nonce).
fn serve() -> u16 {
    let attester = SimulatedAttester::with_measurement(MEAS);
    let cert = power_attest::ratls::issue(
        &attester,
        MODEL,
        Duration::from_secs(3600),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (certs, key) = cert.certified_key().unwrap();
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let spki = cert.spki_sha256;
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { continue };
            let cfg = cfg.clone();
            let attester = attester.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(cfg).unwrap();
                let mut s = rustls::StreamOwned::new(conn, sock);
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).to_string();
                let target = text.split(' ').nth(1).unwrap_or("");
                let (status, body) = respond(target, spki, &attester);
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
                s.conn.send_close_notify();
                let _ = s.flush();
            });
        }
    });
    port
}

fn respond(target: &str, spki: [u8; 32], attester: &SimulatedAttester) -> (&'static str, Vec<u8>) {
    let Some(query) = target.strip_prefix("/v1/attestation?") else {
        return ("404 Not Found", b"{}".to_vec());
    };
    let mut nonce = None;
    let mut model = None;
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("nonce", v)) => nonce = Some(v.to_string()),
            Some(("model", v)) => model = Some(v.to_string()),
            _ => {}
        }
    }
    let mut n = [0u8; 32];
    if hex::decode_to_slice(nonce.unwrap_or_default(), &mut n).is_err() {
        return ("400 Bad Request", br#"{"error":"nonce"}"#.to_vec());
    }
    let model_sha256 = match model.as_deref() {
        None => [0; 32],
        Some(MODEL_NAME) => MODEL,
        Some(_) => return ("404 Not Found", br#"{"error":"model_not_found"}"#.to_vec()),
    };
    let inputs = ReportData {
        nonce: n,
        tls_spki_sha256: spki,
        model_sha256,
    };
    let bundle = attester.attest(&inputs.to_bytes()).unwrap();
    let doc = AttestationDocument::from_bundle(&bundle, &inputs, model);
    ("200 OK", serde_json::to_vec(&doc).unwrap())
}

/// A policy file `name` in `dir` (a test's own directory, removed when it ends).
fn policy_file(dir: &tempfile::TempDir, name: &str, measurement: [u8; 48]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(
        &p,
        format!(
            r#"{{"allowSimulated":true,"referenceValueSets":[{{"name":"dev","simulated":{{"measurements":["{}"]}}}}]}}"#,
            hex::encode(measurement)
        ),
    )
    .unwrap();
    p
}

fn verify_url(port: u16, policy: &PathBuf, model: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_a3s-power-verify"))
        .args([
            "--url",
            &format!("https://127.0.0.1:{port}"),
            "--model",
            model,
        ])
        .args(["--model-sha256", &hex::encode(MODEL)])
        .arg("--policy")
        .arg(policy)
        .args(extra)
        .output()
        .unwrap()
}

/// Every check a simulated verdict lists, for both the handshake and the fresh evidence.
const CHECKS: &[&str] = &[
    "simulated.allowed",
    "snp.report",
    "snp.certificates",
    "snp.product",
    "snp.ark",
    "snp.chain",
    "snp.validity",
    "snp.signature",
    "snp.reportedTcb",
    "snp.chipId",
    "reportData.binding",
    "reportData.model",
    "refset[dev].simulated.measurement",
    "referenceValues",
];

#[test]
fn online_pass_lists_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let port = serve();
    let out = verify_url(port, &policy_file(&dir, "ok.json", MEAS), MODEL_NAME, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (handshake, fresh) = text
        .split_once("== fresh evidence from /v1/attestation")
        .unwrap();
    for section in [handshake, fresh] {
        for c in CHECKS {
            assert!(section.contains(&format!("PASS  {c} ")), "{c}\n{section}");
        }
        assert!(section.contains("verdict: PASSED"), "{section}");
    }
    // Only the fresh evidence has a nonce issue time, so only it checks the age.
    assert!(fresh.contains("PASS  evidence.age"), "{fresh}");
}

#[test]
fn online_json_parses_and_another_measurement_fails_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let port = serve();
    let out = verify_url(
        port,
        &policy_file(&dir, "ok2.json", MEAS),
        MODEL_NAME,
        &["--json"],
    );
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for side in ["handshake", "fresh"] {
        let verdict: Verdict = serde_json::from_value(v[side].clone()).unwrap();
        assert!(verdict.passed, "{side}: {}", verdict.render_text());
        for c in CHECKS {
            assert!(
                verdict
                    .checks
                    .iter()
                    .any(|x| x.name == *c && x.status == CheckStatus::Pass),
                "{side}: {c}"
            );
        }
    }

    // A policy pinning another measurement: the handshake is refused, exit code 1, verdict shown.
    let other = policy_file(&dir, "other.json", [0x43; 48]);
    let out = verify_url(port, &other, MODEL_NAME, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  refset[dev].simulated.measurement"),
        "{text}"
    );
    assert!(text.contains("verdict: FAILED"), "{text}");
    let out = verify_url(port, &other, MODEL_NAME, &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdict: Verdict = serde_json::from_value(v["handshake"].clone()).unwrap();
    assert!(!verdict.passed);
    assert_eq!(verdict.reason(), "MeasurementMismatch");
    assert!(v["fresh"].is_null());

    // An unknown model is a server error (exit 2) naming the status.
    let out = verify_url(port, &policy_file(&dir, "ok3.json", MEAS), "nope", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}
