//! Container probes (httpGet, tcpSocket, exec) with the kubelet's timing and thresholds. A probe
//! task reports only changes of its outcome, after successThreshold / failureThreshold.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

impl ProbeKind {
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
        }
    }
}

/// A probe result worth acting on: a change of outcome, a failed attempt (for the `Unhealthy`
/// event), or a failure threshold reached by a liveness or startup probe (`restart`).
/// `generation` identifies the container run it belongs to.
#[derive(Clone, Debug)]
pub struct ProbeEvent {
    pub container: usize,
    pub generation: u64,
    pub kind: ProbeKind,
    /// The outcome after this attempt.
    pub success: bool,
    /// Why this attempt failed, if it did.
    pub failure: Option<String>,
    pub restart: bool,
}

/// Where a probe runs.
#[derive(Clone, Debug)]
pub struct Target {
    pub pod_ip: Ipv4Addr,
    pub ports: Vec<ContainerPort>,
    /// The container's main process, whose namespaces an exec probe enters.
    pub pid: u32,
    pub env: Vec<(String, String)>,
}

fn port(p: &IntOrString, ports: &[ContainerPort]) -> anyhow::Result<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).with_context(|| format!("port {n} out of range")),
        IntOrString::String(name) => ports
            .iter()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .with_context(|| format!("no container port named {name:?}")),
    }
}

/// One probe attempt: Ok(()) on success, Err(reason) on failure.
pub async fn attempt(probe: &Probe, t: &Target) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let fut = async {
        if let Some(h) = &probe.http_get {
            let scheme = h.scheme.as_deref().unwrap_or("HTTP");
            let tls = match scheme {
                "HTTP" => false,
                "HTTPS" => true,
                _ => bail!("httpGet scheme {scheme:?} is not HTTP or HTTPS"),
            };
            let port = port(&h.port, &t.ports)?;
            let path = h.path.as_deref().unwrap_or("/");
            let headers = h.http_headers.iter().flatten();
            let headers = headers.map(|h| (h.name.as_str(), h.value.as_str()));
            http_get(t.pod_ip, port, path, tls, headers).await
        } else if let Some(s) = &probe.tcp_socket {
            let port = port(&s.port, &t.ports)?;
            TcpStream::connect((t.pod_ip, port))
                .await
                .with_context(|| format!("dial tcp {}:{port}", t.pod_ip))?;
            Ok(())
        } else if let Some(e) = &probe.exec {
            let cmd = e.command.as_deref().unwrap_or_default();
            if cmd.is_empty() {
                bail!("exec probe without a command");
            }
            let out = tokio::process::Command::new("nsenter")
                .args(["--target", &t.pid.to_string(), "--net", "--mount", "--"])
                .args(cmd)
                .env_clear()
                .envs(t.env.iter().map(|(k, v)| (k, v)))
                .kill_on_drop(true)
                .output()
                .await
                .context("running the exec probe")?;
            if !out.status.success() {
                bail!(
                    "command {cmd:?} exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout).trim()
                );
            }
            Ok(())
        } else {
            bail!("this probe type is not supported by the process kubelet")
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => bail!("probe timed out after {timeout:?}"),
    }
}

async fn http_get<'a>(
    ip: Ipv4Addr,
    port: u16,
    path: &str,
    tls: bool,
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> anyhow::Result<()> {
    let url = format!("{}://{ip}:{port}{path}", if tls { "https" } else { "http" });
    let tcp = TcpStream::connect((ip, port))
        .await
        .with_context(|| format!("Get {url:?}: dial"))?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.34\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let head = if tls {
        let connector = tokio_rustls::TlsConnector::from(insecure_tls_config()?);
        let name = rustls::pki_types::ServerName::IpAddress(ip.into());
        let s = connector
            .connect(name, tcp)
            .await
            .with_context(|| format!("Get {url:?}: TLS handshake"))?;
        exchange(s, &req).await?
    } else {
        exchange(tcp, &req).await?
    };
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("Get {url:?}: malformed response {head:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        bail!("HTTP probe failed with statuscode: {code}")
    }
}

/// Sends the request and returns the beginning of the response (its status line).
async fn exchange<S>(mut s: S, req: &str) -> anyhow::Result<String>
where
    S: AsyncReadExt + AsyncWriteExt + Unpin,
{
    s.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 256];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The kubelet does not verify the certificates of HTTPS probes; neither does this.
fn insecure_tls_config() -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AcceptAny(Vec<SignatureScheme>);
    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.clone()
        }
    }
    let provider = rustls::crypto::ring::default_provider();
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let config = rustls::ClientConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()
        .context("TLS configuration for HTTPS probes")?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AcceptAny(schemes)))
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// The outcome after one attempt: it changes only once `success_threshold` consecutive
/// successes or `failure_threshold` consecutive failures have been seen.
pub fn next_state(
    state: bool,
    result: &anyhow::Result<()>,
    successes: &mut i32,
    failures: &mut i32,
    success_threshold: i32,
    failure_threshold: i32,
) -> (bool, String) {
    match result {
        Ok(()) => {
            *successes += 1;
            *failures = 0;
            (
                if *successes >= success_threshold {
                    true
                } else {
                    state
                },
                String::new(),
            )
        }
        Err(e) => {
            *failures += 1;
            *successes = 0;
            (
                if *failures >= failure_threshold {
                    false
                } else {
                    state
                },
                format!("{e:#}"),
            )
        }
    }
}

/// Runs `probe` until the task is aborted, sending outcome changes to `tx`.
pub async fn run(
    kind: ProbeKind,
    probe: Probe,
    target: Target,
    container: usize,
    generation: u64,
    tx: mpsc::Sender<ProbeEvent>,
) {
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
    tokio::time::sleep(Duration::from_secs(
        probe.initial_delay_seconds.unwrap_or(0).max(0) as u64,
    ))
    .await;
    // Readiness and startup start as failing, liveness as passing (like the kubelet).
    let mut state = kind == ProbeKind::Liveness;
    let (mut successes, mut failures) = (0, 0);
    loop {
        let result = attempt(&probe, &target).await;
        let (ok, message) = next_state(
            state,
            &result,
            &mut successes,
            &mut failures,
            success_threshold,
            failure_threshold,
        );
        let restart = !ok && kind != ProbeKind::Readiness && failures >= failure_threshold;
        if restart {
            failures = 0;
        }
        if ok != state || result.is_err() {
            state = ok;
            let ev = ProbeEvent {
                container,
                generation,
                kind,
                success: ok,
                failure: result.is_err().then_some(message),
                restart,
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        if kind == ProbeKind::Startup && ok {
            return; // a startup probe stops once it has succeeded
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: bool, results: &[bool], st: i32, ft: i32) -> Vec<bool> {
        let (mut s, mut f, mut state) = (0, 0, start);
        results
            .iter()
            .map(|ok| {
                let r = if *ok {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("refused"))
                };
                state = next_state(state, &r, &mut s, &mut f, st, ft).0;
                state
            })
            .collect()
    }

    #[test]
    fn outcome_changes_only_at_thresholds() {
        // Readiness starts failing: early failures must not make it ready.
        assert_eq!(
            run(false, &[false, false, true], 1, 3),
            [false, false, true]
        );
        assert_eq!(run(false, &[true, true], 2, 3), [false, true]);
        // Liveness starts passing and fails only after failureThreshold in a row.
        assert_eq!(
            run(true, &[false, false, true, false, false, false], 1, 3),
            [true, true, true, true, true, false]
        );
    }
}
