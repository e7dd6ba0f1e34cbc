//! RA-TLS: certificate build/parse (checked by `openssl x509` as an independent parser), the
//! rustls verifier in a real handshake against an in-test RA-TLS HTTPS server, and the online
//! fresh-nonce flow including a relay that serves evidence bound to another key.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use power_attest::attester::{Attester, SimulatedAttester};
use power_attest::policy::{ReferenceValueSet, SimulatedReferenceValues};
use power_attest::ratls::{RaTlsCertificate, issue, parse_ra_tls_cert, verify_ra_tls_cert};
use power_attest::{AttestationDocument, CheckStatus, Policy, ReportData};
use time::OffsetDateTime;

const MEAS: [u8; 48] = [0x42; 48];
const MODEL: [u8; 32] = [0xAB; 32];

fn policy(allow: bool) -> Policy {
    Policy {
        allow_simulated: allow,
        reference_value_sets: vec![ReferenceValueSet {
            name: Some("dev".into()),
            simulated: Some(SimulatedReferenceValues {
                measurements: vec![hex::encode(MEAS)],
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn cert() -> RaTlsCertificate {
    issue(
        &SimulatedAttester::with_measurement(MEAS),
        MODEL,
        Duration::from_secs(3600),
        OffsetDateTime::now_utc(),
    )
    .unwrap()
}

#[test]
fn certificate_is_well_formed_for_an_independent_parser() {
    let c = cert();
    let dir = std::env::temp_dir().join(format!("a3s-ratls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("c.der");
    std::fs::write(&p, &c.cert_der).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-inform", "der", "-noout", "-text", "-in"])
        .arg(&p)
        .output()
        .expect("openssl must be installed for this test");
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1.3.6.1.4.1.56560.1.1:"), "{text}");
    assert!(!text.contains("1.3.6.1.4.1.56560.1.1: critical"), "{text}");
    assert!(
        text.contains("prime256v1") && text.contains("ecdsa-with-SHA256"),
        "{text}"
    );
    let (bundle, spki) = parse_ra_tls_cert(&c.cert_der).unwrap();
    assert_eq!(spki, c.spki_sha256);
    assert_eq!(bundle.kind, power_attest::TeeKind::Simulated);
    let v = verify_ra_tls_cert(
        &c.cert_der,
        &policy(true),
        Some(MODEL),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert!(v.passed, "{}", v.render_text());
    // Expired certificate.
    assert!(
        verify_ra_tls_cert(
            &c.cert_der,
            &policy(true),
            Some(MODEL),
            OffsetDateTime::now_utc() + time::Duration::days(2)
        )
        .is_err()
    );
    assert!(c.needs_rotation(
        OffsetDateTime::now_utc() + time::Duration::minutes(50),
        Duration::from_secs(3600)
    ));
}

#[test]
fn evidence_transplanted_into_another_certificate_fails_the_binding() {
    let c = cert();
    let (bundle, _) = parse_ra_tls_cert(&c.cert_der).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil".into()]).unwrap();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            power_attest::oids::RA_TLS_EVIDENCE_ARCS,
            bundle.encode(),
        ));
    let evil = params.self_signed(&key).unwrap();
    let v = verify_ra_tls_cert(
        evil.der(),
        &policy(true),
        Some(MODEL),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert_eq!(
        v.checks
            .iter()
            .find(|c| c.name == "reportData.binding")
            .unwrap()
            .status,
        CheckStatus::Fail
    );
    assert!(!v.accepted);
}

/// A one-connection-at-a-time RA-TLS HTTPS server answering `GET /v1/attestation`.
fn serve(c: RaTlsCertificate, relay_spki: Option<[u8; 32]>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (certs, key) = c.certified_key().unwrap();
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
    let spki = relay_spki.unwrap_or(c.spki_sha256);
    std::thread::spawn(move || {
        let attester = SimulatedAttester::with_measurement(MEAS);
        for sock in listener.incoming() {
            let Ok(sock) = sock else { continue };
            let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let mut s = rustls::StreamOwned::new(conn, sock);
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req).to_string();
            let Some(nonce_hex) = text.split("nonce=").nth(1).map(|r| &r[..64]) else {
                continue;
            };
            let mut nonce = [0u8; 32];
            hex::decode_to_slice(nonce_hex, &mut nonce).unwrap();
            let inputs = ReportData {
                nonce,
                tls_spki_sha256: spki,
                model_sha256: MODEL,
            };
            let bundle = attester.attest(&inputs.to_bytes()).unwrap();
            let body = serde_json::to_vec(&AttestationDocument::from_bundle(
                &bundle,
                &inputs,
                Some("tiny".into()),
            ))
            .unwrap();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    });
    port
}

#[test]
fn online_attestation_over_ra_tls() {
    let port = serve(cert(), None);
    let url = format!("https://127.0.0.1:{port}");
    let r = power_attest::online::attest_url(&url, &policy(true), Some("tiny"), Some(MODEL), None)
        .unwrap();
    assert!(r.handshake.passed, "{}", r.handshake.render_text());
    assert!(r.fresh.passed, "{}", r.fresh.render_text());
    assert_eq!(r.document.model.as_deref(), Some("tiny"));
    // A policy that refuses simulated evidence aborts the handshake.
    let e = power_attest::online::attest_url(&url, &policy(false), Some("tiny"), Some(MODEL), None)
        .unwrap_err();
    assert!(e.to_string().contains("handshake refused"), "{e}");
    // Wrong expected model.
    let r =
        power_attest::online::attest_url(&url, &policy(true), Some("tiny"), Some([1; 32]), None);
    assert!(r.is_err() || !r.unwrap().fresh.passed);
}

#[test]
fn a_relay_serving_evidence_bound_to_another_key_is_caught() {
    let port = serve(cert(), Some([7; 32]));
    let r = power_attest::online::attest_url(
        &format!("https://127.0.0.1:{port}"),
        &policy(true),
        None,
        Some(MODEL),
        None,
    )
    .unwrap();
    assert!(r.handshake.passed);
    assert!(!r.fresh.passed);
    assert_eq!(
        r.fresh
            .checks
            .iter()
            .find(|c| c.name == "reportData.binding")
            .unwrap()
            .status,
        CheckStatus::Fail
    );
}
