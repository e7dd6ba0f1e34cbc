//! The result of a verification: every check with what was expected and what was found, for
//! kubectl, Events and the CLI. Never just "false".

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::TeeKind;
use crate::policy::Enforcement;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckStatus {
    Pass,
    Fail,
    /// Nothing to compare against (no expectation, or an earlier step failed).
    NotChecked,
}

/// One named check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Stable dotted name, e.g. `snp.signature`, `refset[prod].snp.measurement`.
    pub name: String,
    pub status: CheckStatus,
    pub expected: String,
    pub actual: String,
}

impl Check {
    pub fn new(
        name: impl Into<String>,
        ok: bool,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status: if ok {
                CheckStatus::Pass
            } else {
                CheckStatus::Fail
            },
            expected: expected.into(),
            actual: actual.into(),
        }
    }
    pub fn pass(
        name: impl Into<String>,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) -> Check {
        Check::new(name, true, expected, actual)
    }
    pub fn fail(
        name: impl Into<String>,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) -> Check {
        Check::new(name, false, expected, actual)
    }
    pub fn not_checked(name: impl Into<String>, why: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: CheckStatus::NotChecked,
            expected: "-".into(),
            actual: why.into(),
        }
    }
    pub fn passed(&self) -> bool {
        self.status == CheckStatus::Pass
    }
    pub fn failed(&self) -> bool {
        self.status == CheckStatus::Fail
    }
}

/// The verdict of [`crate::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub tee: Option<TeeKind>,
    pub enforcement: Enforcement,
    /// Every check passed and at least one reference-value set matched completely.
    pub passed: bool,
    /// `passed`, or enforcement is `Audit` (failures are reported, not enforced).
    pub accepted: bool,
    /// Name (or index) of the reference-value set that matched.
    pub matched_reference_set: Option<String>,
    /// Hex launch measurement (SNP MEASUREMENT / TDX MRTD), when the evidence parsed.
    pub measurement: Option<String>,
    /// TDX TCB status from collateral, when computed.
    pub tcb_status: Option<String>,
    pub checks: Vec<Check>,
}

impl Verdict {
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.failed())
    }
    /// A CamelCase reason for the first failing check (for Kubernetes conditions and Events).
    pub fn reason(&self) -> &'static str {
        let Some(first) = self.failures().next() else {
            return "AttestationSucceeded";
        };
        let n = first.name.as_str();
        let leaf = n.rsplit_once("].").map_or(n, |(_, l)| l);
        match leaf {
            _ if leaf.ends_with("measurement") || leaf.ends_with("mrTd") => "MeasurementMismatch",
            _ if leaf.starts_with("denyList.model") => "ModelDenied",
            _ if leaf.starts_with("denyList") => "MeasurementDenied",
            "reportData.model" => "ModelDigestMismatch",
            "reportData.binding" => "ReportDataMismatch",
            "simulated.allowed" => "SimulatedNotAllowed",
            "evidence.age" => "EvidenceTooOld",
            "snp.kds" => "CollateralUnavailable",
            _ if leaf.contains("signature") => "SignatureInvalid",
            _ if leaf.contains("chain") || leaf.contains("ark") || leaf.contains("root") => {
                "CertificateChainInvalid"
            }
            _ if leaf.contains("validity") => "CertificateExpired",
            _ if leaf.contains("Tcb") || leaf.contains("tcb") => "TcbMismatch",
            _ if leaf.contains("debug") || leaf.contains("guestPolicy") => "DebugNotAllowed",
            _ if leaf.contains("parse") || leaf.contains("report") || leaf.contains("quote") => {
                "EvidenceMalformed"
            }
            _ if leaf.contains("collateral") => "CollateralInvalid",
            _ => "PolicyMismatch",
        }
    }
    /// One-line summary of the first failure.
    pub fn message(&self) -> String {
        match self.failures().next() {
            None => format!(
                "attestation verified ({} checks passed{})",
                self.checks.iter().filter(|c| c.passed()).count(),
                self.matched_reference_set
                    .as_ref()
                    .map(|s| format!(", reference set {s}"))
                    .unwrap_or_default()
            ),
            Some(c) => format!(
                "{} failed: expected {}, got {}",
                c.name, c.expected, c.actual
            ),
        }
    }
    /// Human table, one check per line.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        for c in &self.checks {
            let tag = match c.status {
                CheckStatus::Pass => "PASS",
                CheckStatus::Fail => "FAIL",
                CheckStatus::NotChecked => "----",
            };
            s.push_str(&format!(
                "{tag}  {:<40} expected: {}\n      {:<40} actual:   {}\n",
                c.name, c.expected, "", c.actual
            ));
        }
        s.push_str(&format!(
            "verdict: {} (enforcement {:?}, reason {}){}\n",
            if self.passed { "PASSED" } else { "FAILED" },
            self.enforcement,
            self.reason(),
            if !self.passed && self.accepted {
                " — accepted in Audit mode"
            } else {
                ""
            }
        ));
        s
    }
}

/// RFC 3339 rendering used in check values.
pub fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}
