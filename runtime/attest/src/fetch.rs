//! A small blocking HTTP/1.1 `GET` for collateral (AMD KDS): `http://` and `https://` (rustls with
//! the Mozilla roots), one overall deadline covering connect, request and response, a body size
//! cap, Content-Length, chunked and read-to-close bodies. It never follows redirects. Every error
//! names the URL. Certificates fetched this way are verified by the chain check anyway; TLS only
//! keeps the fetch private and the cache clean.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A response with status 200.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub body: Vec<u8>,
}

const MAX_HEADER: usize = 16 * 1024;

struct Url<'a> {
    tls: bool,
    host: &'a str,
    port: u16,
    path: &'a str,
}

fn parse_url(url: &str) -> std::result::Result<Url<'_>, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err("only http:// and https:// URLs are supported".into());
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if hostport.contains('@') {
        return Err("credentials in URLs are not supported".into());
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?,
        ),
        _ => (
            hostport.trim_start_matches('[').trim_end_matches(']'),
            if tls { 443 } else { 80 },
        ),
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("control characters or spaces in the path".into());
    }
    Ok(Url {
        tls,
        host,
        port,
        path,
    })
}

static TLS_CONFIG: LazyLock<std::result::Result<Arc<rustls::ClientConfig>, String>> =
    LazyLock::new(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|e| e.to_string())
    });

/// `GET url`, all of it within `timeout`; bodies over `max_body` bytes are refused.
/// Non-200 statuses are errors quoting the start of the body.
pub(crate) fn get(url: &str, timeout: Duration, max_body: usize) -> Result<Response> {
    let err = |reason: String| Error::Fetch {
        url: url.to_string(),
        reason,
    };
    let u = parse_url(url).map_err(err)?;
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("timed out after {} ms", timeout.as_millis()))
    };
    let addrs: Vec<_> = (u.host, u.port)
        .to_socket_addrs()
        .map_err(|e| err(format!("resolving {}: {e}", u.host)))?
        .collect();
    let mut last_err = format!("{} resolved to no address", u.host);
    let mut sock = None;
    for a in addrs {
        let t = left().map_err(err)?;
        match TcpStream::connect_timeout(&a, t) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last_err = format!("connect {a}: {e}"),
        }
    }
    let mut sock = sock.ok_or_else(|| err(last_err))?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: a3s-power-attest\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        u.path, u.host
    );
    let raw = if u.tls {
        let cfg = TLS_CONFIG.as_ref().map_err(|e| err(format!("TLS: {e}")))?;
        let name = rustls::pki_types::ServerName::try_from(u.host.to_string())
            .map_err(|e| err(format!("server name: {e}")))?;
        let mut conn = rustls::ClientConnection::new(cfg.clone(), name)
            .map_err(|e| err(format!("TLS: {e}")))?;
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        exchange(&mut tls, &req, &left, max_body, |s, t| {
            s.sock.set_read_timeout(Some(t))?;
            s.sock.set_write_timeout(Some(t))
        })
    } else {
        exchange(&mut sock, &req, &left, max_body, |s, t| {
            s.set_read_timeout(Some(t))?;
            s.set_write_timeout(Some(t))
        })
    }
    .map_err(err)?;
    parse_response(&raw, max_body).map_err(err)
}

/// Write the request and read until the peer closes, the deadline passes or the cap is hit.
fn exchange<S: Read + Write>(
    s: &mut S,
    req: &str,
    left: &dyn Fn() -> std::result::Result<Duration, String>,
    max_body: usize,
    set_timeouts: impl Fn(&mut S, Duration) -> std::io::Result<()>,
) -> std::result::Result<Vec<u8>, String> {
    let timed = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            left().err().unwrap_or_else(|| "timed out".into())
        }
        _ => e.to_string(),
    };
    set_timeouts(s, left()?).map_err(|e| e.to_string())?;
    s.write_all(req.as_bytes()).map_err(timed)?;
    s.flush().map_err(timed)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        set_timeouts(s, left()?).map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > max_body + MAX_HEADER + 64 * 1024 {
                    return Err(format!("response larger than {max_body} bytes"));
                }
                // Stop as soon as a Content-Length body is complete (keep-alive servers).
                if let Ok(Some(_)) = complete_length(&raw) {
                    break;
                }
            }
            // A server closing without TLS close_notify: judge completeness by the framing.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(timed(e)),
        }
    }
    Ok(raw)
}

/// `Some(total)` when `raw` holds the header and a complete Content-Length body.
fn complete_length(raw: &[u8]) -> std::result::Result<Option<usize>, String> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "non-UTF-8 HTTP header")?;
    for l in head.split("\r\n").skip(1) {
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            let n: usize = v.trim().parse().map_err(|_| "bad Content-Length")?;
            return Ok((raw.len() >= split + 4 + n).then_some(split + 4 + n));
        }
    }
    Ok(None)
}

fn parse_response(raw: &[u8], max_body: usize) -> std::result::Result<Response, String> {
    if raw.is_empty() {
        return Err("empty response (connection closed)".into());
    }
    let split = raw
        .windows(4)
        .take(MAX_HEADER)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete HTTP header in the response")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "non-UTF-8 HTTP header")?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(format!(
            "not an HTTP/1.x response: {:?}",
            &status_line[..status_line.len().min(80)]
        ));
    }
    let mut len = None;
    let mut chunked = false;
    let mut location = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            len = Some(v.parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        } else if k.eq_ignore_ascii_case("location") {
            location = Some(v.to_string());
        }
    }
    let body = if chunked {
        dechunk(body, max_body)?
    } else {
        match len {
            Some(n) if n > max_body => {
                return Err(format!("body of {n} bytes exceeds {max_body}"));
            }
            Some(n) if body.len() >= n => body[..n].to_vec(),
            Some(n) => return Err(format!("body truncated: {} of {n} bytes", body.len())),
            None if body.len() > max_body => {
                return Err(format!("body exceeds {max_body} bytes"));
            }
            None => body.to_vec(),
        }
    };
    if code != "200" {
        let snippet = String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_string();
        return Err(format!(
            "HTTP {}{}{}",
            status_line.split_once(' ').map_or("", |x| x.1),
            location
                .map(|l| format!(" (redirect to {l}, not followed)"))
                .unwrap_or_default(),
            if snippet.is_empty() {
                String::new()
            } else {
                format!(": {snippet}")
            }
        ));
    }
    Ok(Response { body })
}

fn dechunk(mut b: &[u8], max_body: usize) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size line")?;
        let line = std::str::from_utf8(&b[..eol]).map_err(|_| "bad chunk size line")?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if out.len().saturating_add(size) > max_body {
            return Err(format!("chunked body exceeds {max_body} bytes"));
        }
        let end = size
            .checked_add(2)
            .filter(|e| *e <= b.len())
            .ok_or("truncated chunk")?;
        if &b[size..end] != b"\r\n" {
            return Err("chunk not terminated by CRLF".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[end..];
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("https://kdsintf.amd.com/vcek/v1/Milan/ab?blSPL=03").unwrap();
        assert!(u.tls);
        assert_eq!((u.host, u.port), ("kdsintf.amd.com", 443));
        assert_eq!(u.path, "/vcek/v1/Milan/ab?blSPL=03");
        let u = parse_url("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.host, u.port, u.path), ("127.0.0.1", 8080, "/"));
        let u = parse_url("http://[::1]:9/x").unwrap();
        assert_eq!((u.host, u.port), ("::1", 9));
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://h:99999/").is_err());
        assert!(parse_url("http://h/a b").is_err());
        assert!(parse_url("http://u:p@h/").is_err());
    }

    #[test]
    fn responses() {
        let ok = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", 10).unwrap();
        assert_eq!(ok.body, b"abc");
        let ch = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1;x=y\r\nc\r\n0\r\n\r\n",
            10,
        )
        .unwrap();
        assert_eq!(ch.body, b"abc");
        let e = parse_response(b"HTTP/1.1 404 Not Found\r\n\r\nno such chip", 100).unwrap_err();
        assert!(e.contains("404 Not Found: no such chip"), "{e}");
        let e = parse_response(b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n", 100).unwrap_err();
        assert!(e.contains("redirect to /x"), "{e}");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\nab", 100).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n", 10).is_err());
        assert!(parse_response(b"garbage", 10).is_err());
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n", 10).is_err());
        assert!(parse_response(b"", 10).is_err());
        for bad in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
        ] {
            assert!(parse_response(bad, 100).is_err());
        }
    }
}
