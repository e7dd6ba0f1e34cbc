//! `verify(evidence, expectations, policy, now) -> Verdict` (DESIGN §3.4): evidence checks for the
//! bundle's TEE, the report_data binding, freshness, deny-lists, then the reference-value sets
//! (a set matches only if every one of its checks passes; the first match wins).

use time::OffsetDateTime;

use crate::TeeKind;
use crate::evidence::EvidenceBundle;
use crate::policy::{Enforcement, Policy};
use crate::report_data::binding_hash;
use crate::snp::verify::{SnpTrust, snp_reference_checks, verify_snp_evidence};
use crate::tdx::verify::{tdx_reference_checks, verify_tdx_evidence};
use crate::verdict::{Check, CheckStatus, Verdict, fmt_time};

/// What the verifier itself knows and expects, independent of the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expectations {
    /// The nonce the verifier sent (32 zero bytes inside an RA-TLS certificate).
    pub nonce: [u8; 32],
    /// SHA-256 of the SPKI of the TLS certificate seen on the connection (zeros without TLS).
    pub tls_spki_sha256: [u8; 32],
    /// The model digest the verifier expects to be bound; `None` skips the check.
    pub model_sha256: Option<[u8; 32]>,
    /// When the nonce was issued (evidence age = now − this); `None` skips the age check.
    pub nonce_issued_at: Option<OffsetDateTime>,
}

/// Verify `bundle` at time `now`. Never fails: every problem is a failing check in the verdict.
pub fn verify(
    bundle: &EvidenceBundle,
    expectations: &Expectations,
    policy: &Policy,
    now: OffsetDateTime,
) -> Verdict {
    let mut checks = Vec::new();
    if let Err(e) = policy.validate() {
        checks.push(Check::fail("policy", "a valid policy", e.to_string()));
    }
    let kind = bundle.kind;
    if kind == TeeKind::Simulated {
        checks.push(Check::new(
            "simulated.allowed",
            policy.allow_simulated,
            "allowSimulated: true for simulated evidence",
            format!("allowSimulated: {}", policy.allow_simulated),
        ));
    }

    // Evidence checks; yields (report_data, measurement hex) when the evidence parsed.
    let mut snp_ev = None;
    let mut tdx_ev = None;
    let mut tcb_status = None;
    let (report_data, measurement): (Option<[u8; 64]>, Option<String>) = match kind {
        TeeKind::SevSnp | TeeKind::Simulated => {
            let trust = if kind == TeeKind::SevSnp {
                SnpTrust::Amd
            } else {
                SnpTrust::Simulated
            };
            snp_ev = verify_snp_evidence(bundle, trust, now, &mut checks);
            match &snp_ev {
                Some(e) => (
                    Some(e.report.report_data),
                    Some(hex::encode(e.report.measurement)),
                ),
                None => (None, None),
            }
        }
        TeeKind::Tdx => {
            tdx_ev = verify_tdx_evidence(bundle, now, &mut checks);
            match &tdx_ev {
                Some(e) => {
                    tcb_status = e.tcb_status.map(|s| s.as_str().to_string());
                    (
                        Some(e.quote.body.report_data),
                        Some(hex::encode(e.quote.body.mr_td)),
                    )
                }
                None => (None, None),
            }
        }
    };

    // report_data binding.
    if let Some(rd) = report_data {
        let want = binding_hash(&expectations.nonce, &expectations.tls_spki_sha256);
        checks.push(Check::new(
            "reportData.binding",
            rd[..32] == want,
            format!(
                "SHA-256(tag, nonce {}, spki {}) = {}",
                short(&expectations.nonce),
                short(&expectations.tls_spki_sha256),
                hex::encode(want)
            ),
            hex::encode(&rd[..32]),
        ));
        match expectations.model_sha256 {
            Some(m) => checks.push(Check::new(
                "reportData.model",
                rd[32..] == m,
                hex::encode(m),
                hex::encode(&rd[32..]),
            )),
            None => checks.push(Check::not_checked(
                "reportData.model",
                format!(
                    "no expected model; evidence binds {}",
                    hex::encode(&rd[32..])
                ),
            )),
        }
        let model_hex = hex::encode(&rd[32..]);
        if !policy.deny_list.model_sha256.is_empty() {
            checks.push(Check::new(
                "denyList.modelSha256",
                !policy
                    .deny_list
                    .model_sha256
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&model_hex)),
                format!(
                    "not one of {} denied models",
                    policy.deny_list.model_sha256.len()
                ),
                model_hex,
            ));
        }
    }
    if let Some(m) = &measurement
        && !policy.deny_list.measurements.is_empty()
    {
        checks.push(Check::new(
            "denyList.measurements",
            !policy
                .deny_list
                .measurements
                .iter()
                .any(|d| d.eq_ignore_ascii_case(m)),
            format!(
                "not one of {} denied measurements",
                policy.deny_list.measurements.len()
            ),
            m.clone(),
        ));
    }

    // Freshness.
    match expectations.nonce_issued_at {
        Some(t) => {
            let age = now - t;
            let max = policy.max_evidence_age();
            let ok = !age.is_negative() && age.unsigned_abs() <= max;
            checks.push(Check::new(
                "evidence.age",
                ok,
                format!("<= {}s", max.as_secs()),
                format!("{}s (nonce issued {})", age.whole_seconds(), fmt_time(t)),
            ));
        }
        None => checks.push(Check::not_checked(
            "evidence.age",
            "no nonce issue time given",
        )),
    }

    // Reference-value sets.
    let mut matched = None;
    let mut set_checks: Vec<Vec<Check>> = Vec::new();
    for (i, set) in policy.reference_value_sets.iter().enumerate() {
        let name = set.name.clone().unwrap_or_else(|| i.to_string());
        let prefix = format!("refset[{name}].");
        let c = match kind {
            TeeKind::SevSnp => match (&set.snp, &snp_ev) {
                (Some(r), Some(ev)) => snp_reference_checks(ev, r, &prefix),
                _ => continue,
            },
            TeeKind::Simulated => match (&set.simulated, &snp_ev) {
                (Some(r), Some(ev)) => {
                    let m = hex::encode(ev.report.measurement);
                    vec![Check::new(
                        format!("{prefix}simulated.measurement"),
                        r.measurements.iter().any(|x| x.eq_ignore_ascii_case(&m)),
                        format!("one of [{}]", r.measurements.join(", ")),
                        m,
                    )]
                }
                _ => continue,
            },
            TeeKind::Tdx => match (&set.tdx, &tdx_ev) {
                (Some(r), Some(ev)) => tdx_reference_checks(ev, r, &prefix),
                _ => continue,
            },
        };
        if c.iter().all(|c| c.status != CheckStatus::Fail) {
            matched = Some((name, c));
            break;
        }
        set_checks.push(c);
    }
    let evidence_ok = report_data.is_some();
    match matched {
        Some((name, c)) => {
            checks.extend(c);
            checks.push(Check::pass(
                "referenceValues",
                "one complete reference-value set",
                format!("set {name}"),
            ));
            let all_ok = checks.iter().all(|c| !c.failed());
            finish(
                kind,
                policy,
                checks,
                Some(name),
                measurement,
                tcb_status,
                all_ok,
            )
        }
        None => {
            let n = set_checks.len();
            for c in set_checks {
                checks.extend(c);
            }
            if evidence_ok {
                checks.push(Check::fail(
                    "referenceValues",
                    format!("one complete {kind} reference-value set"),
                    if n == 0 {
                        format!("policy has no {kind} reference-value set")
                    } else {
                        format!("none of {n} {kind} sets matched")
                    },
                ));
            }
            finish(kind, policy, checks, None, measurement, tcb_status, false)
        }
    }
}

/// [`verify`], first completing an SEV-SNP bundle without a VCEK from AMD KDS (a bundle that
/// carries its own certificates is verified as it is, with no network access). The fetch is reported as the check `snp.kds`; a failed
/// fetch fails it, and the chain checks then fail for want of a certificate.
pub fn verify_with_kds(
    bundle: &EvidenceBundle,
    expectations: &Expectations,
    policy: &Policy,
    now: OffsetDateTime,
    kds: &crate::kds::KdsClient,
) -> Verdict {
    if bundle.kind != TeeKind::SevSnp || bundle.leaf_cert.is_some() {
        return verify(bundle, expectations, policy, now);
    }
    let mut b = bundle.clone();
    let expected = format!(
        "certificates missing from the bundle fetched from {}",
        kds.base_url()
    );
    let check = match kds.complete_bundle(&mut b) {
        Ok(done) => {
            let mut got = Vec::new();
            if let Some((url, src)) = &done.vcek {
                got.push(format!("VCEK from {} ({url})", src.as_str()));
            }
            if let Some((url, src)) = &done.chain {
                got.push(format!("chain from {} ({url})", src.as_str()));
            }
            if let Some(e) = &done.chain_error {
                got.push(format!("chain fetch failed, using the built-in one: {e}"));
            }
            Check::pass("snp.kds", expected, got.join("; "))
        }
        Err(e) => Check::fail("snp.kds", expected, e.to_string()),
    };
    let mut v = verify(&b, expectations, policy, now);
    if check.failed() {
        v.passed = false;
        v.accepted = policy.enforcement == Enforcement::Audit;
    }
    v.checks.insert(0, check);
    v
}

fn finish(
    kind: TeeKind,
    policy: &Policy,
    checks: Vec<Check>,
    matched: Option<String>,
    measurement: Option<String>,
    tcb_status: Option<String>,
    passed: bool,
) -> Verdict {
    let passed = passed && checks.iter().all(|c| !c.failed());
    Verdict {
        tee: Some(kind),
        enforcement: policy.enforcement,
        passed,
        accepted: passed || policy.enforcement == Enforcement::Audit,
        matched_reference_set: matched,
        measurement,
        tcb_status,
        checks,
    }
}

fn short(b: &[u8; 32]) -> String {
    if b.iter().all(|x| *x == 0) {
        "zeros".into()
    } else {
        hex::encode(&b[..8]) + "…"
    }
}
