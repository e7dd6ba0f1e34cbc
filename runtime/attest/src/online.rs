//! Online attestation of a running server (the CLI's `--url` mode and the operator's gate): an
//! RA-TLS handshake checked by [`RaTlsVerifier`], then `GET /v1/attestation?nonce=…&model=…` on
//! the same connection, verified with a fresh nonce against the SPKI of that connection's
//! certificate so a relay cannot pass off another server's evidence. Blocking std I/O only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::evidence::AttestationDocument;
use crate::kds::KdsClient;
use crate::policy::Policy;
use crate::ratls::RaTlsVerifier;
use crate::report_data::spki_sha256;
use crate::verdict::Verdict;
use crate::verify::{Expectations, verify, verify_with_kds};

/// Response bodies larger than this are refused.
pub const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// What an online attestation produced.
#[derive(Debug, Clone)]
pub struct OnlineAttestation {
    /// Verdict on the certificate's embedded evidence (during the handshake).
    pub handshake: Verdict,
    /// Verdict on the fresh-nonce evidence from `/v1/attestation`.
    pub fresh: Verdict,
    pub document: AttestationDocument,
}

fn split_url(url: &str) -> Result<(String, u16)> {
    let bad = |r: &str| Error::Fetch {
        url: url.to_string(),
        reason: r.to_string(),
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad("only https:// URLs are supported"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h.trim_matches(['[', ']']).to_string(),
            p.parse().map_err(|_| bad("bad port"))?,
        ),
        _ => (hostport.to_string(), 443),
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    Ok((host, port))
}

/// Attest the server at `url` (e.g. `https://10.0.0.5:8443`). `model` is the served model name;
/// `model_sha256` the digest it must bind. `now` is the verification time (`None` = system time).
pub fn attest_url(
    url: &str,
    policy: &Policy,
    model: Option<&str>,
    model_sha256: Option<[u8; 32]>,
    now: Option<OffsetDateTime>,
) -> Result<OnlineAttestation> {
    attest_url_with_kds(url, policy, model, model_sha256, now, None)
}

/// [`attest_url`], fetching SEV-SNP certificates the evidence lacks (no VCEK in the bundle) from
/// AMD KDS through `kds` (both for the handshake and the fresh evidence).
pub fn attest_url_with_kds(
    url: &str,
    policy: &Policy,
    model: Option<&str>,
    model_sha256: Option<[u8; 32]>,
    now: Option<OffsetDateTime>,
    kds: Option<Arc<KdsClient>>,
) -> Result<OnlineAttestation> {
    let fetch_err = |r: String| Error::Fetch {
        url: url.to_string(),
        reason: r,
    };
    let (host, port) = split_url(url)?;
    let mut verifier = RaTlsVerifier::new(policy.clone(), model_sha256);
    if let Some(t) = now {
        verifier = verifier.at(t);
    }
    if let Some(k) = &kds {
        verifier = verifier.with_kds(k.clone());
    }
    let verifier = Arc::new(verifier);
    let config = Arc::new(verifier.clone().client_config()?);
    let name = ServerName::try_from(host.clone()).map_err(|e| fetch_err(e.to_string()))?;
    let mut conn =
        rustls::ClientConnection::new(config, name).map_err(|e| fetch_err(e.to_string()))?;
    let mut sock =
        TcpStream::connect((host.as_str(), port)).map_err(|e| fetch_err(e.to_string()))?;
    sock.set_read_timeout(Some(Duration::from_secs(30))).ok();
    sock.set_write_timeout(Some(Duration::from_secs(30))).ok();

    let mut nonce = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let issued = now.unwrap_or_else(OffsetDateTime::now_utc);
    let mut path = format!("/v1/attestation?nonce={}", hex::encode(nonce));
    if let Some(m) = model {
        path.push_str("&model=");
        for b in m.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                path.push(b as char);
            } else {
                path.push_str(&format!("%{b:02X}"));
            }
        }
    }
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let hs = tls.write_all(req.as_bytes());
    let handshake = verifier.last_verdict();
    if let Err(e) = hs {
        return Err(match handshake {
            Some(v) if !v.accepted => Error::Refused {
                url: url.to_string(),
                verdict: Box::new(v),
            },
            _ => fetch_err(format!("TLS: {e}")),
        });
    }
    let handshake = handshake.ok_or_else(|| fetch_err("handshake produced no verdict".into()))?;
    let peer = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| fetch_err("no peer certificate".into()))?;
    let peer_spki = {
        let c = crate::x509::parse_cert("peer", &peer)?;
        spki_sha256(c.public_key().raw)
    };
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_RESPONSE {
                    return Err(fetch_err("response too large".into()));
                }
            }
            // A peer closing without close_notify after a complete body is common; judge by length below.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(fetch_err(e.to_string())),
        }
    }
    let body = http_body(&raw).map_err(fetch_err)?;
    let document: AttestationDocument =
        serde_json::from_slice(body).map_err(|e| fetch_err(format!("attestation JSON: {e}")))?;
    let bundle = document.bundle()?;
    let exp = Expectations {
        nonce,
        tls_spki_sha256: peer_spki,
        model_sha256,
        nonce_issued_at: Some(issued),
    };
    let at = now.unwrap_or_else(OffsetDateTime::now_utc);
    let fresh = match &kds {
        Some(k) => verify_with_kds(&bundle, &exp, policy, at, k),
        None => verify(&bundle, &exp, policy, at),
    };
    Ok(OnlineAttestation {
        handshake,
        fresh,
        document,
    })
}

/// The body of a complete HTTP/1.1 200 response with Content-Length (or read to close).
fn http_body(raw: &[u8]) -> std::result::Result<&[u8], String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header terminator")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "non-UTF-8 HTTP header")?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let code = status.split(' ').nth(1).unwrap_or("");
    if code != "200" {
        return Err(format!(
            "HTTP status {status:?}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    let mut len = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = Some(
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| "bad Content-Length")?,
                );
            }
            if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                return Err("chunked responses are not supported".into());
            }
        }
    }
    match len {
        Some(n) if body.len() >= n => Ok(&body[..n]),
        Some(n) => Err(format!("body truncated: {} of {n} bytes", body.len())),
        None => Ok(body),
    }
}
