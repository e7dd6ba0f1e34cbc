//! The attestation policy: the operator's `AttestationPolicy` spec (DESIGN §4.2), camelCase serde,
//! free of Kubernetes dependencies so the operator can wrap it and clients can load it from a file.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Whether failures block (Enforce) or are only reported (Audit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum Enforcement {
    #[default]
    Enforce,
    Audit,
}

/// `AttestationPolicy.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub enforcement: Enforcement,
    /// Accept simulated evidence (development only). Default false.
    #[serde(default)]
    pub allow_simulated: bool,
    /// A pod passes if it matches any one set completely.
    #[serde(default)]
    pub reference_value_sets: Vec<ReferenceValueSet>,
    #[serde(default)]
    pub freshness: Freshness,
    #[serde(default)]
    pub collateral: CollateralSources,
    #[serde(default)]
    pub deny_list: DenyList,
}

/// One complete set of reference values. Only the section matching the evidence's TEE is used;
/// a set without that section does not match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceValueSet {
    /// Optional name shown in verdicts; defaults to the set's index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snp: Option<SnpReferenceValues>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tdx: Option<TdxReferenceValues>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated: Option<SimulatedReferenceValues>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnpReferenceValues {
    /// Allowed launch measurements (96 hex characters each). Must not be empty.
    pub measurements: Vec<String>,
    #[serde(
        default,
        rename = "minimumTCB",
        skip_serializing_if = "Option::is_none"
    )]
    pub minimum_tcb: Option<MinimumTcb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_policy: Option<GuestPolicyRequirements>,
    /// Required VMPL of the requester; 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmpl: Option<u32>,
    /// Allowed CHIP_IDs (128 hex characters). Empty: any chip.
    #[serde(default, rename = "chipIDs", skip_serializing_if = "Vec::is_empty")]
    pub chip_ids: Vec<String>,
}

/// Minimum SPL values; each component of COMMITTED_TCB and LAUNCH_TCB must be ≥.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MinimumTcb {
    #[serde(default)]
    pub bootloader: u8,
    #[serde(default)]
    pub tee: u8,
    #[serde(default)]
    pub snp: u8,
    #[serde(default)]
    pub microcode: u8,
    /// Turin only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
}

/// What the guest policy may allow. `debug: true` *permits* a debug guest; default false.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestPolicyRequirements {
    #[serde(default)]
    pub debug: bool,
    #[serde(default, rename = "migrateMA")]
    pub migrate_ma: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TdxReferenceValues {
    /// Allowed MRTD values (96 hex). Must not be empty.
    pub mr_td: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr: Option<RtmrReferenceValues>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub td_attributes: Option<TdAttributesRequirements>,
    /// Allowed MRSERVICETD values (TD 1.5 bodies, 96 hex); empty: it must be all zero.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mr_service_td: Vec<String>,
    /// Accepted TCB statuses from collateral; `["UpToDate"]` when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_tcb_status: Vec<String>,
}

/// Allowed values per RTMR; an empty list accepts any value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RtmrReferenceValues {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtmr0: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtmr1: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtmr2: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtmr3: Vec<String>,
}

/// `debug: true` permits a debug TD (default false); `septVeDisable: true` (the default)
/// requires SEPT_VE_DISABLE to be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TdAttributesRequirements {
    #[serde(default)]
    pub debug: bool,
    #[serde(default = "yes")]
    pub sept_ve_disable: bool,
}

fn yes() -> bool {
    true
}

impl Default for TdAttributesRequirements {
    fn default() -> Self {
        TdAttributesRequirements {
            debug: false,
            sept_ve_disable: true,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulatedReferenceValues {
    /// Allowed simulated measurements (96 hex). Must not be empty.
    pub measurements: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Freshness {
    /// e.g. "5m".
    #[serde(default = "default_reattest")]
    pub reattest_interval: String,
    /// e.g. "2m": the longest time between nonce issue and verification.
    #[serde(default = "default_max_age")]
    pub max_evidence_age: String,
}

fn default_reattest() -> String {
    "5m".into()
}
fn default_max_age() -> String {
    "2m".into()
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            reattest_interval: default_reattest(),
            max_evidence_age: default_max_age(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollateralSources {
    #[serde(default, rename = "amdKdsURL", skip_serializing_if = "Option::is_none")]
    pub amd_kds_url: Option<String>,
    #[serde(
        default,
        rename = "intelPcsURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub intel_pcs_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DenyList {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_sha256: Vec<String>,
}

/// Parse a Kubernetes-style duration: `90s`, `5m`, `1h`, `1h30m`, `500ms`.
pub fn parse_duration(field: &str, s: &str) -> Result<Duration> {
    let err = |reason: &str| Error::Policy {
        field: field.to_string(),
        reason: format!("{reason} in duration {s:?} (expected e.g. 90s, 5m, 1h30m)"),
    };
    if s.is_empty() || s.len() > 32 {
        return Err(err("bad length"));
    }
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            "ms"
        } else {
            match c {
                'h' => "h",
                'm' => "m",
                's' => "s",
                _ => return Err(err("unknown unit")),
            }
        };
        let n: u64 = num.parse().map_err(|_| err("missing number"))?;
        num.clear();
        let d = match unit {
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "s" => Duration::from_secs(n),
            _ => Duration::from_millis(n),
        };
        total = total.saturating_add(d);
    }
    if !num.is_empty() {
        return Err(err("number without unit"));
    }
    Ok(total)
}

fn check_hex(field: String, s: &str, chars: usize) -> Result<()> {
    if s.len() != chars || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Policy {
            field,
            reason: format!("expected {chars} hex characters, got {s:?}"),
        });
    }
    Ok(())
}

impl Policy {
    /// Parse JSON or YAML-as-JSON policy text and validate it.
    pub fn from_json(text: &str) -> Result<Policy> {
        let p: Policy = serde_json::from_str(text).map_err(|e| Error::Policy {
            field: format!("line {} column {}", e.line(), e.column()),
            reason: e.to_string(),
        })?;
        p.validate()?;
        Ok(p)
    }

    /// Check every value's shape; errors name the field path.
    pub fn validate(&self) -> Result<()> {
        parse_duration(
            "freshness.reattestInterval",
            &self.freshness.reattest_interval,
        )?;
        parse_duration("freshness.maxEvidenceAge", &self.freshness.max_evidence_age)?;
        if let Some(u) = &self.collateral.amd_kds_url {
            crate::kds::KdsClient::new(u)?;
        }
        for (i, m) in self.deny_list.measurements.iter().enumerate() {
            check_hex(format!("denyList.measurements[{i}]"), m, 96)?;
        }
        for (i, m) in self.deny_list.model_sha256.iter().enumerate() {
            check_hex(format!("denyList.modelSha256[{i}]"), m, 64)?;
        }
        for (i, set) in self.reference_value_sets.iter().enumerate() {
            let p = format!("referenceValueSets[{i}]");
            if set.snp.is_none() && set.tdx.is_none() && set.simulated.is_none() {
                return Err(Error::Policy {
                    field: p,
                    reason: "a reference value set needs snp, tdx or simulated".into(),
                });
            }
            if let Some(snp) = &set.snp {
                if snp.measurements.is_empty() {
                    return Err(Error::Policy {
                        field: format!("{p}.snp.measurements"),
                        reason: "must list at least one measurement".into(),
                    });
                }
                for (j, m) in snp.measurements.iter().enumerate() {
                    check_hex(format!("{p}.snp.measurements[{j}]"), m, 96)?;
                }
                for (j, c) in snp.chip_ids.iter().enumerate() {
                    check_hex(format!("{p}.snp.chipIDs[{j}]"), c, 128)?;
                }
                if let Some(v) = snp.vmpl
                    && v > 3
                {
                    return Err(Error::Policy {
                        field: format!("{p}.snp.vmpl"),
                        reason: format!("VMPL must be 0..=3, got {v}"),
                    });
                }
            }
            if let Some(tdx) = &set.tdx {
                if tdx.mr_td.is_empty() {
                    return Err(Error::Policy {
                        field: format!("{p}.tdx.mrTd"),
                        reason: "must list at least one MRTD".into(),
                    });
                }
                for (j, m) in tdx.mr_td.iter().enumerate() {
                    check_hex(format!("{p}.tdx.mrTd[{j}]"), m, 96)?;
                }
                if let Some(r) = &tdx.rtmr {
                    for (k, list) in [&r.rtmr0, &r.rtmr1, &r.rtmr2, &r.rtmr3].iter().enumerate() {
                        for (j, m) in list.iter().enumerate() {
                            check_hex(format!("{p}.tdx.rtmr.rtmr{k}[{j}]"), m, 96)?;
                        }
                    }
                }
                for (j, m) in tdx.mr_service_td.iter().enumerate() {
                    check_hex(format!("{p}.tdx.mrServiceTd[{j}]"), m, 96)?;
                }
                for (j, s) in tdx.accepted_tcb_status.iter().enumerate() {
                    if crate::tdx::TcbStatus::from_name(s).is_none() {
                        return Err(Error::Policy {
                            field: format!("{p}.tdx.acceptedTcbStatus[{j}]"),
                            reason: format!("unknown TCB status {s:?}"),
                        });
                    }
                }
            }
            if let Some(sim) = &set.simulated {
                if sim.measurements.is_empty() {
                    return Err(Error::Policy {
                        field: format!("{p}.simulated.measurements"),
                        reason: "must list at least one measurement".into(),
                    });
                }
                for (j, m) in sim.measurements.iter().enumerate() {
                    check_hex(format!("{p}.simulated.measurements[{j}]"), m, 96)?;
                }
            }
        }
        Ok(())
    }

    /// `freshness.maxEvidenceAge` as a duration (validated by [`Policy::validate`]).
    pub fn max_evidence_age(&self) -> Duration {
        parse_duration("freshness.maxEvidenceAge", &self.freshness.max_evidence_age)
            .unwrap_or(Duration::from_secs(120))
    }
    /// `freshness.reattestInterval` as a duration.
    pub fn reattest_interval(&self) -> Duration {
        parse_duration(
            "freshness.reattestInterval",
            &self.freshness.reattest_interval,
        )
        .unwrap_or(Duration::from_secs(300))
    }
}

#[cfg(all(test, feature = "schemars"))]
#[allow(clippy::unwrap_used)]
mod schema_tests {
    #[test]
    fn policy_schema_uses_the_wire_names() {
        let schema = serde_json::to_string(&schemars::schema_for!(super::Policy)).unwrap();
        for name in [
            "referenceValueSets",
            "allowSimulated",
            "amdKdsURL",
            "minimumTCB",
            "chipIDs",
            "maxEvidenceAge",
            "mrTd",
            "Enforce",
        ] {
            assert!(schema.contains(&format!("\"{name}\"")), "{name}: {schema}");
        }
    }
}
