//! `a3s-power-verify`: verify A3S Power attestation evidence offline (a report/quote/bundle file)
//! or online (`--url`: RA-TLS handshake + fresh-nonce `/v1/attestation`). Prints every check
//! with expected and actual values (`--json` for machines). Exit code 0 only when the verdict is
//! accepted (all enforced checks pass); 1 when verification fails; 2 on usage or I/O errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use power_attest::error::parse_hex;
use power_attest::kds::KdsClient;
use power_attest::tdx::TdxCollateral;
use power_attest::{AttestationDocument, EvidenceBundle, Expectations, Policy, TeeKind, Verdict};
use time::OffsetDateTime;

#[derive(Parser, Debug)]
#[command(
    name = "a3s-power-verify",
    version,
    about = "Verify A3S Power TEE attestation evidence"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Online mode: attest a running server, e.g. https://10.0.0.5:8443.
    #[arg(long, global = true)]
    url: Option<String>,
    /// Policy file: an AttestationPolicy object as applied with kubectl (YAML or JSON), or just
    /// its `spec`.
    #[arg(long, global = true)]
    policy: Option<PathBuf>,
    /// Served model name to request (online mode).
    #[arg(long, global = true)]
    model: Option<String>,
    /// Expected model SHA-256 (64 hex) bound in report_data.
    #[arg(long, global = true)]
    model_sha256: Option<String>,
    /// Verification time (RFC 3339); default now. Real evidence and collateral expire.
    #[arg(long, global = true)]
    at: Option<String>,
    /// Machine-readable verdict.
    #[arg(long, global = true)]
    json: bool,
    /// AMD KDS base URL for SEV-SNP certificates the evidence lacks; default: the policy's
    /// collateral.amdKdsURL, else https://kdsintf.amd.com.
    #[arg(long, global = true)]
    kds_url: Option<String>,
    /// Where fetched KDS certificates are cached; default $XDG_CACHE_HOME/a3s-power/kds.
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Verify a file: SNP report (1184 bytes), TDX quote, evidence bundle, or attestation JSON.
    Report {
        file: PathBuf,
        /// Certificates (PEM or DER; VCEK/VLEK, ASK/ASVK, ARK), sorted by their CN.
        #[arg(long, num_args = 1..)]
        certs: Vec<PathBuf>,
        /// Evidence kind; detected from the file when absent.
        #[arg(long)]
        kind: Option<Kind>,
        /// TDX collateral (dcap-qvl JSON).
        #[arg(long)]
        collateral: Option<PathBuf>,
        /// The nonce the evidence must bind (64 hex); zeros when absent.
        #[arg(long)]
        nonce: Option<String>,
        /// SHA-256 of the TLS SPKI the evidence must bind (64 hex); zeros when absent.
        #[arg(long)]
        spki_sha256: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    SevSnp,
    Tdx,
    Simulated,
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

fn load_bundle(file: &Path, kind: Option<Kind>) -> Result<EvidenceBundle> {
    let raw = read(file)?;
    if raw.starts_with(power_attest::evidence::BUNDLE_MAGIC) {
        return Ok(EvidenceBundle::decode(&raw)?);
    }
    if raw.first() == Some(&b'{') {
        let doc: AttestationDocument = serde_json::from_slice(&raw)
            .with_context(|| format!("{}: attestation JSON", file.display()))?;
        return Ok(doc.bundle()?);
    }
    let kind = match kind {
        Some(Kind::SevSnp) => TeeKind::SevSnp,
        Some(Kind::Tdx) => TeeKind::Tdx,
        Some(Kind::Simulated) => TeeKind::Simulated,
        None if raw.len() == power_attest::snp::report::REPORT_LEN => TeeKind::SevSnp,
        None if raw.len() > 8 && matches!(raw[0], 4 | 5) && raw[4..8] == [0x81, 0, 0, 0] => {
            TeeKind::Tdx
        }
        None => bail!(
            "{}: cannot tell the evidence kind; pass --kind",
            file.display()
        ),
    };
    Ok(EvidenceBundle::new(kind, raw))
}

fn add_certs(b: &mut EvidenceBundle, certs: &[PathBuf]) -> Result<()> {
    for p in certs {
        let raw = read(p)?;
        let ders = if raw.starts_with(b"-----") {
            power_attest::x509::pem_certs(&p.display().to_string(), &raw)?
        } else {
            vec![raw]
        };
        for der in ders {
            let cn = power_attest::x509::common_name(&power_attest::x509::parse_cert(
                &p.display().to_string(),
                &der,
            )?);
            let slot = if cn == "SEV-VCEK" || cn == "SEV-VLEK" {
                &mut b.leaf_cert
            } else if cn.starts_with("ARK-") {
                &mut b.root_cert
            } else {
                &mut b.intermediate_cert
            };
            *slot = Some(der);
        }
    }
    Ok(())
}

fn hex32(field: &str, s: Option<&String>) -> Result<Option<[u8; 32]>> {
    Ok(match s {
        Some(s) => Some(parse_hex::<32>(field, s)?),
        None => None,
    })
}

fn print(v: &Verdict, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        print!("{}", v.render_text());
    }
    Ok(())
}

/// A policy file as users have it: the `AttestationPolicy` object they apply with kubectl (YAML
/// or JSON, `spec` taken from it), or the spec alone. Field errors name the path.
fn load_policy(bytes: &[u8]) -> Result<Policy> {
    let text = std::str::from_utf8(bytes).context("not UTF-8")?;
    let doc: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).context("not valid JSON")?
    } else {
        serde_yaml::from_str(text).context("not valid YAML")?
    };
    let spec = match doc.get("kind").and_then(|k| k.as_str()) {
        Some("AttestationPolicy") => doc
            .get("spec")
            .cloned()
            .context("an AttestationPolicy object without `spec`")?,
        Some(other) => bail!("expected an AttestationPolicy (or its spec), got kind {other}"),
        None => doc,
    };
    Ok(Policy::from_json(&spec.to_string())?)
}

fn run(cli: Cli) -> Result<bool> {
    let policy_path = cli.policy.as_ref().context("--policy FILE is required")?;
    let policy = load_policy(&read(policy_path)?)
        .with_context(|| format!("policy file {}", policy_path.display()))?;
    let at = match &cli.at {
        Some(s) => Some(
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("--at {s:?} is not RFC 3339"))?,
        ),
        None => None,
    };
    let model_sha256 = hex32("--model-sha256", cli.model_sha256.as_ref())?;
    let mut kds = KdsClient::for_policy(&policy, cli.kds_url.as_deref()).context("--kds-url")?;
    if let Some(dir) = cli
        .cache_dir
        .clone()
        .or_else(power_attest::kds::default_cache_dir)
    {
        kds = kds.with_cache_dir(dir);
    }
    if let Some(url) = &cli.url {
        let r = match power_attest::online::attest_url_with_kds(
            url,
            &policy,
            cli.model.as_deref(),
            model_sha256,
            at,
            Some(Arc::new(kds)),
        ) {
            Ok(r) => r,
            // The certificate evidence failed the policy: a verdict, not a usage error.
            Err(power_attest::Error::Refused { verdict, .. }) => {
                if cli.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &serde_json::json!({"handshake": verdict, "fresh": null})
                        )?
                    );
                } else {
                    println!("== RA-TLS certificate evidence (during the handshake)");
                    print(&verdict, false)?;
                    println!("== handshake refused: no fresh evidence requested");
                }
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        if cli.json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"handshake": r.handshake, "fresh": r.fresh})
                )?
            );
        } else {
            println!("== RA-TLS certificate evidence (during the handshake)");
            print(&r.handshake, false)?;
            println!("== fresh evidence from /v1/attestation");
            print(&r.fresh, false)?;
        }
        return Ok(r.handshake.accepted && r.fresh.accepted);
    }
    let Some(Cmd::Report {
        file,
        certs,
        kind,
        collateral,
        nonce,
        spki_sha256,
    }) = cli.cmd
    else {
        bail!("give `report FILE ...` or `--url https://HOST:PORT`");
    };
    let mut b = load_bundle(&file, kind)?;
    add_certs(&mut b, &certs)?;
    if let Some(c) = collateral {
        b.tdx_collateral = Some(TdxCollateral::from_json(&read(&c)?)?.to_json());
    }
    let exp = Expectations {
        nonce: hex32("--nonce", nonce.as_ref())?.unwrap_or([0; 32]),
        tls_spki_sha256: hex32("--spki-sha256", spki_sha256.as_ref())?.unwrap_or([0; 32]),
        model_sha256,
        nonce_issued_at: None,
    };
    let v = power_attest::verify_with_kds(
        &b,
        &exp,
        &policy,
        at.unwrap_or_else(OffsetDateTime::now_utc),
        &kds,
    );
    print(&v, cli.json)?;
    Ok(v.accepted)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("a3s-power-verify: {e:#}");
            ExitCode::from(2)
        }
    }
}
