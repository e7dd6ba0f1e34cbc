//! AMD KDS fetcher against a local HTTP server standing in for kdsintf.amd.com, serving the real
//! corpus certificates: fetch then cache, corrupt cache entries refetched, clear errors for 404,
//! garbage, wrong certificates and timeouts, verification through `verify_with_kds` and the CLI.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use power_attest::kds::{KdsClient, Source};
use power_attest::snp::{Product, SnpReport, Tcb};
use power_attest::{EvidenceBundle, Policy, TeeKind};

#[derive(Clone)]
enum Reply {
    Ok(Vec<u8>),
    Status(&'static str),
    /// Accept and never answer.
    Hang,
}

/// A stand-in KDS: path (with query) → reply; every request is logged.
struct Kds {
    port: u16,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Kds {
    fn start() -> Kds {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, l) = (routes.clone(), log.clone());
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(mut sock) = sock else { continue };
                let (r, l) = (r.clone(), l.clone());
                std::thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut b = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&b[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&req).to_string();
                    let path = text.split(' ').nth(1).unwrap_or("").to_string();
                    l.lock().unwrap().push(path.clone());
                    let reply = r.lock().unwrap().get(&path).cloned();
                    let (status, body) = match reply {
                        Some(Reply::Ok(b)) => ("200 OK", b),
                        Some(Reply::Status(s)) => (s, b"KDS says no".to_vec()),
                        Some(Reply::Hang) => {
                            std::thread::sleep(Duration::from_secs(10));
                            return;
                        }
                        None => ("404 Not Found", b"unknown".to_vec()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes());
                    let _ = sock.write_all(&body);
                });
            }
        });
        Kds { port, routes, log }
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    fn route(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
    }
    fn hits(&self, path: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
    fn total(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

/// A directory `name` that does not exist yet, inside `scratch` (removed when the test ends).
fn cache_dir(scratch: &tempfile::TempDir, name: &str) -> PathBuf {
    scratch.path().join(name)
}

/// The KDS path of a corpus report's VCEK.
fn vcek_path(report: &str) -> String {
    let r = SnpReport::parse(&data(report)).unwrap();
    let p = r.cpuid_product().unwrap_or(Product::Milan);
    format!(
        "/vcek/v1/{}",
        KdsClient::vcek_path(p, &r.chip_id, &Tcb::decode(r.reported_tcb, p)).unwrap()
    )
}

/// A KDS serving the Milan v3 and v2 VCEKs and the Milan and Genoa chains.
fn corpus_kds() -> Kds {
    let kds = Kds::start();
    for (report, vcek) in [
        ("snp/milan-v3-report.bin", "snp/milan-v3-vcek.pem"),
        ("snp/milan-v2-report.bin", "snp/milan-v2-vcek.der"),
        ("snp/genoa-v3-report.bin", "snp/genoa-v3-vcek.pem"),
    ] {
        kds.route(&vcek_path(report), Reply::Ok(cert(vcek)));
    }
    for p in ["milan", "genoa"] {
        kds.route(
            &format!("/vcek/v1/{}{}/cert_chain", p[..1].to_uppercase(), &p[1..]),
            Reply::Ok(data(&format!("snp/{p}-ask-ark.pem"))),
        );
    }
    kds
}

fn report_only(report: &str) -> EvidenceBundle {
    EvidenceBundle::new(TeeKind::SevSnp, data(report))
}

fn policy_for(report: &str) -> Policy {
    let r = SnpReport::parse(&data(report)).unwrap();
    Policy::from_json(&format!(
        r#"{{"referenceValueSets":[{{"name":"p","snp":{{"measurements":["{}"],"guestPolicy":{{"debug":true}}}}}}]}}"#,
        hex::encode(r.measurement)
    ))
    .unwrap()
}

#[test]
fn fetches_once_then_serves_from_the_cache() {
    let kds = corpus_kds();
    let scratch = tempfile::tempdir().unwrap();
    let dir = cache_dir(&scratch, "cache");
    let report = "snp/milan-v3-report.bin";
    let vp = vcek_path(report);
    let client = KdsClient::new(&kds.url()).unwrap().with_cache_dir(&dir);
    let mut b = report_only(report);
    let done = client.complete_bundle(&mut b).unwrap();
    assert_eq!(done.vcek.as_ref().unwrap().1, Source::Network);
    assert_eq!(done.vcek.as_ref().unwrap().0, format!("{}{vp}", kds.url()));
    assert_eq!(done.chain.as_ref().unwrap().1, Source::Network);
    assert_eq!(
        b.leaf_cert.as_deref(),
        Some(&cert("snp/milan-v3-vcek.pem")[..])
    );
    assert_eq!(
        (kds.hits(&vp), kds.hits("/vcek/v1/Milan/cert_chain")),
        (1, 1)
    );

    // Full verification of the completed bundle: chain, signature and binding to the chip/TCB.
    let v = power_attest::verify_with_kds(
        &report_only(report),
        &Default::default(),
        &policy_for(report),
        VCEK_TIME,
        &client,
    );
    assert_pass(
        &v,
        &[
            "snp.kds",
            "snp.chain",
            "snp.signature",
            "snp.chipId",
            "snp.reportedTcb",
            "refset[p].snp.measurement",
        ],
    );
    let kds_check = v.checks.iter().find(|c| c.name == "snp.kds").unwrap();
    assert!(
        kds_check.actual.contains("VCEK from cache"),
        "{kds_check:?}"
    );

    // A second client on the same directory: no request at all.
    let again = KdsClient::new(&kds.url()).unwrap().with_cache_dir(&dir);
    let mut b2 = report_only(report);
    let done = again.complete_bundle(&mut b2).unwrap();
    assert_eq!(done.vcek.unwrap().1, Source::Cache);
    assert_eq!(done.chain.unwrap().1, Source::Cache);
    assert_eq!(b2, b);
    assert_eq!(kds.total(), 2);
    // No temporary files are left behind.
    let leftovers: Vec<_> = walk(&dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(d: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn corrupt_or_foreign_cache_entries_are_refetched() {
    let kds = corpus_kds();
    let scratch = tempfile::tempdir().unwrap();
    let dir = cache_dir(&scratch, "corrupt");
    let report = "snp/milan-v3-report.bin";
    let vp = vcek_path(report);
    let client = KdsClient::new(&kds.url()).unwrap().with_cache_dir(&dir);
    client.complete_bundle(&mut report_only(report)).unwrap();
    let files: Vec<PathBuf> = walk(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    let vcek_file = files
        .iter()
        .find(|p| p.extension().unwrap() == "der")
        .unwrap()
        .clone();
    let chain_file = files
        .iter()
        .find(|p| p.extension().unwrap() == "pem")
        .unwrap()
        .clone();
    let good = std::fs::read(&vcek_file).unwrap();
    // Garbage, a truncated certificate, and a valid VCEK of another chip: all refetched.
    for (i, bad) in [
        b"garbage".to_vec(),
        good[..good.len() / 2].to_vec(),
        cert("snp/milan-v2-vcek.der"),
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(&vcek_file, &bad).unwrap();
        let mut b = report_only(report);
        let done = client.complete_bundle(&mut b).unwrap();
        assert_eq!(done.vcek.unwrap().1, Source::Network, "case {i}");
        assert_eq!(kds.hits(&vp), 2 + i, "case {i}");
        assert_eq!(std::fs::read(&vcek_file).unwrap(), good, "case {i}");
        assert_eq!(b.leaf_cert.unwrap(), good);
    }
    // A chain file holding the Genoa chain is not the Milan chain.
    std::fs::write(&chain_file, data("snp/genoa-ask-ark.pem")).unwrap();
    let done = client.complete_bundle(&mut report_only(report)).unwrap();
    assert_eq!(done.chain.unwrap().1, Source::Network);
    assert_eq!(kds.hits("/vcek/v1/Milan/cert_chain"), 2);
}

#[test]
fn errors_name_the_url() {
    let kds = corpus_kds();
    let report = "snp/milan-v3-report.bin";
    let vp = vcek_path(report);
    let full = format!("{}{vp}", kds.url());
    let client = KdsClient::new(&kds.url())
        .unwrap()
        .with_timeout(Duration::from_millis(700));
    let err = |c: &KdsClient| {
        c.complete_bundle(&mut report_only(report))
            .unwrap_err()
            .to_string()
    };

    kds.route(&vp, Reply::Status("404 Not Found"));
    let e = err(&client);
    assert!(
        e.contains(&full) && e.contains("404 Not Found: KDS says no"),
        "{e}"
    );

    kds.route(&vp, Reply::Status("429 Too Many Requests"));
    let e = err(&client);
    assert!(e.contains(&full) && e.contains("429"), "{e}");

    kds.route(&vp, Reply::Ok(b"<html>not a certificate</html>".to_vec()));
    let e = err(&client);
    assert!(
        e.contains(&full) && e.contains("not the expected certificate"),
        "{e}"
    );

    // A real VCEK, but of another chip.
    kds.route(&vp, Reply::Ok(cert("snp/genoa-v3-vcek.pem")));
    let e = err(&client);
    assert!(e.contains(&full) && e.contains("hwID"), "{e}");

    kds.route(&vp, Reply::Hang);
    let t = Instant::now();
    let e = err(&client);
    assert!(e.contains(&full) && e.contains("timed out"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // Nothing listening.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gone = KdsClient::new(&format!("http://127.0.0.1:{closed}")).unwrap();
    let e = err(&gone);
    assert!(
        e.contains(&format!("http://127.0.0.1:{closed}/vcek/v1/Milan/")),
        "{e}"
    );

    // verify_with_kds turns the failure into a failing `snp.kds` check.
    kds.route(&vp, Reply::Status("404 Not Found"));
    let v = power_attest::verify_with_kds(
        &report_only(report),
        &Default::default(),
        &policy_for(report),
        VCEK_TIME,
        &client,
    );
    assert_fail(&v, "snp.kds");
    assert_fail(&v, "snp.certificates");
    assert_eq!(v.reason(), "CollateralUnavailable");
    assert!(!v.accepted);
}

#[test]
fn chain_failure_falls_back_to_the_pinned_ask_and_v2_reports_resolve_their_product() {
    let kds = corpus_kds();
    kds.route(
        "/vcek/v1/Milan/cert_chain",
        Reply::Status("503 Service Unavailable"),
    );
    let client = KdsClient::new(&kds.url()).unwrap();
    // v2: no CPUID, so the product is found by asking KDS (Milan first).
    let report = "snp/milan-v2-report.bin";
    let mut b = report_only(report);
    let done = client.complete_bundle(&mut b).unwrap();
    assert!(done.vcek.unwrap().0.contains("/vcek/v1/Milan/"));
    assert!(done.chain_error.unwrap().contains("503"));
    assert!(b.intermediate_cert.is_none());
    let v = power_attest::verify(&b, &Default::default(), &policy_for(report), VCEK_TIME);
    assert_pass(&v, &["snp.chain", "snp.signature", "snp.chipId"]);

    // Genoa (v3, CPUID) uses the Genoa paths.
    let mut b = report_only("snp/genoa-v3-report.bin");
    let done = client.complete_bundle(&mut b).unwrap();
    assert!(done.vcek.unwrap().0.contains("/vcek/v1/Genoa/"));
    assert_eq!(
        done.chain.unwrap().0,
        format!("{}/vcek/v1/Genoa/cert_chain", kds.url())
    );

    // A bundle with its own VCEK never touches the network; VLEK reports cannot be fetched.
    let before = kds.total();
    let mut full = snp_bundle("snp/milan-v3-report.bin", "snp/milan-v3-vcek.pem");
    assert_eq!(
        client.complete_bundle(&mut full).unwrap(),
        Default::default()
    );
    assert_eq!(kds.total(), before);
    let e = client
        .complete_bundle(&mut report_only("snp/milan-v3-vlek-report.bin"))
        .unwrap_err();
    assert!(e.to_string().contains("VLEK"), "{e}");
}

#[test]
fn cli_fetches_from_kds_url_or_the_policy_collateral() {
    let kds = corpus_kds();
    let scratch = tempfile::tempdir().unwrap();
    let dir = cache_dir(&scratch, "cli");
    let report = "snp/milan-v3-report.bin";
    let r = SnpReport::parse(&data(report)).unwrap();
    let tmp = cache_dir(&scratch, "cli-files");
    std::fs::create_dir_all(&tmp).unwrap();
    let policy_file = |name: &str, kds_url: Option<&str>| {
        let p = tmp.join(name);
        let coll = kds_url
            .map(|u| format!(r#","collateral":{{"amdKdsURL":"{u}"}}"#))
            .unwrap_or_default();
        std::fs::write(
            &p,
            format!(
                r#"{{"referenceValueSets":[{{"snp":{{"measurements":["{}"]}}}}]{coll}}}"#,
                hex::encode(r.measurement)
            ),
        )
        .unwrap();
        p
    };
    let run = |policy: &PathBuf, extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_a3s-power-verify"))
            .arg("report")
            .arg(format!("{}/testdata/{report}", env!("CARGO_MANIFEST_DIR")))
            .args(["--at", "2026-03-01T00:00:00Z", "--cache-dir"])
            .arg(&dir)
            .args(extra)
            .arg("--policy")
            .arg(policy)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let text = run(&policy_file("plain.json", None), &["--kds-url", &kds.url()]);
    assert!(text.contains("PASS  snp.kds"), "{text}");
    assert!(text.contains("PASS  snp.chain"), "{text}");
    assert!(text.contains("PASS  snp.signature"), "{text}");
    assert_eq!(kds.hits(&vcek_path(report)), 1);
    // The policy's collateral.amdKdsURL is used when --kds-url is absent; the cache answers.
    let text = run(&policy_file("coll.json", Some(&kds.url())), &[]);
    assert!(text.contains("PASS  snp.chain"), "{text}");
    assert!(text.contains("VCEK from cache"), "{text}");
    assert_eq!(kds.hits(&vcek_path(report)), 1);
    // A bad URL in the policy is a policy error naming the field.
    let bad = tmp.join("bad.json");
    std::fs::write(&bad, r#"{"collateral":{"amdKdsURL":"kds.example"}}"#).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_a3s-power-verify"))
        .arg("report")
        .arg(format!("{}/testdata/{report}", env!("CARGO_MANIFEST_DIR")))
        .arg("--policy")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("collateral.amdKdsURL"));
}
