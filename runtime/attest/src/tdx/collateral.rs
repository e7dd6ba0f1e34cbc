//! Intel PCS collateral: TDX TCB Info v3, QE Identity v2 (signed over their raw JSON text), the
//! TCB-signing chain and the CRLs, in dcap-qvl's one-file JSON shape or from raw PCS bodies.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// TCB status, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TcbStatus {
    UpToDate,
    SWHardeningNeeded,
    ConfigurationNeeded,
    ConfigurationAndSWHardeningNeeded,
    OutOfDate,
    OutOfDateConfigurationNeeded,
    Revoked,
}

impl TcbStatus {
    pub fn from_name(s: &str) -> Option<TcbStatus> {
        Some(match s {
            "UpToDate" => TcbStatus::UpToDate,
            "SWHardeningNeeded" => TcbStatus::SWHardeningNeeded,
            "ConfigurationNeeded" => TcbStatus::ConfigurationNeeded,
            "ConfigurationAndSWHardeningNeeded" => TcbStatus::ConfigurationAndSWHardeningNeeded,
            "OutOfDate" => TcbStatus::OutOfDate,
            "OutOfDateConfigurationNeeded" => TcbStatus::OutOfDateConfigurationNeeded,
            "Revoked" => TcbStatus::Revoked,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::Revoked => "Revoked",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcbInfo {
    pub id: String,
    pub version: u32,
    pub issue_date: String,
    pub next_update: String,
    pub fmspc: String,
    pub pce_id: String,
    #[serde(default)]
    pub tdx_module: Option<TdxModule>,
    #[serde(default)]
    pub tdx_module_identities: Vec<TdxModuleIdentity>,
    pub tcb_levels: Vec<TcbLevel>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TdxModule {
    pub mrsigner: String,
    pub attributes: String,
    pub attributes_mask: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TdxModuleIdentity {
    pub id: String,
    pub mrsigner: String,
    pub attributes: String,
    pub attributes_mask: String,
    pub tcb_levels: Vec<IsvTcbLevel>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IsvSvn {
    pub isvsvn: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IsvTcbLevel {
    pub tcb: IsvSvn,
    pub tcb_status: String,
    #[serde(default, rename = "advisoryIDs")]
    pub advisory_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Svn {
    pub svn: u8,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TcbComponents {
    pub sgxtcbcomponents: Vec<Svn>,
    pub pcesvn: u16,
    #[serde(default)]
    pub tdxtcbcomponents: Vec<Svn>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcbLevel {
    pub tcb: TcbComponents,
    #[serde(default)]
    pub tcb_date: String,
    pub tcb_status: String,
    #[serde(default, rename = "advisoryIDs")]
    pub advisory_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QeIdentity {
    pub id: String,
    pub version: u32,
    pub issue_date: String,
    pub next_update: String,
    pub miscselect: String,
    pub miscselect_mask: String,
    pub attributes: String,
    pub attributes_mask: String,
    pub mrsigner: String,
    pub isvprodid: u16,
    pub tcb_levels: Vec<IsvTcbLevel>,
}

/// Everything needed to compute a TDX TCB status. The JSON strings are kept byte-exact because
/// the signatures cover them as served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxCollateral {
    pub tcb_info: String,
    /// Hex `r‖s`.
    pub tcb_info_signature: String,
    /// PEM: "Intel SGX TCB Signing", then the root.
    pub tcb_info_issuer_chain: String,
    pub qe_identity: String,
    pub qe_identity_signature: String,
    #[serde(default)]
    pub qe_identity_issuer_chain: String,
    /// Hex DER (may be empty: CRL not checked → failing check).
    #[serde(default)]
    pub root_ca_crl: String,
    #[serde(default)]
    pub pck_crl: String,
    #[serde(default)]
    pub pck_crl_issuer_chain: String,
}

#[derive(Deserialize)]
struct PcsTcbInfoBody<'a> {
    #[serde(borrow, rename = "tcbInfo")]
    tcb_info: &'a RawValue,
    signature: String,
}

#[derive(Deserialize)]
struct PcsQeIdentityBody<'a> {
    #[serde(borrow, rename = "enclaveIdentity")]
    enclave_identity: &'a RawValue,
    signature: String,
}

impl TdxCollateral {
    /// dcap-qvl's collateral JSON.
    pub fn from_json(text: &[u8]) -> Result<TdxCollateral> {
        serde_json::from_slice(text).map_err(|e| Error::collateral("TDX collateral JSON", e))
    }
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// From raw Intel PCS response bodies (`{"tcbInfo":…,"signature":…}` and
    /// `{"enclaveIdentity":…,"signature":…}`) plus the `TCB-Info-Issuer-Chain` PEM and DER CRLs.
    pub fn from_pcs(
        tcb_info_body: &str,
        qe_identity_body: &str,
        signing_chain_pem: &str,
        root_ca_crl_der: Option<&[u8]>,
        pck_crl_der: Option<&[u8]>,
    ) -> Result<TdxCollateral> {
        let t: PcsTcbInfoBody<'_> = serde_json::from_str(tcb_info_body)
            .map_err(|e| Error::collateral("TCB Info body", e))?;
        let q: PcsQeIdentityBody<'_> = serde_json::from_str(qe_identity_body)
            .map_err(|e| Error::collateral("QE Identity body", e))?;
        Ok(TdxCollateral {
            tcb_info: t.tcb_info.get().to_string(),
            tcb_info_signature: t.signature,
            tcb_info_issuer_chain: signing_chain_pem.to_string(),
            qe_identity: q.enclave_identity.get().to_string(),
            qe_identity_signature: q.signature,
            qe_identity_issuer_chain: signing_chain_pem.to_string(),
            root_ca_crl: root_ca_crl_der.map(hex::encode).unwrap_or_default(),
            pck_crl: pck_crl_der.map(hex::encode).unwrap_or_default(),
            pck_crl_issuer_chain: String::new(),
        })
    }

    pub fn parsed_tcb_info(&self) -> Result<TcbInfo> {
        serde_json::from_str(&self.tcb_info).map_err(|e| Error::collateral("tcbInfo", e))
    }
    pub fn parsed_qe_identity(&self) -> Result<QeIdentity> {
        serde_json::from_str(&self.qe_identity).map_err(|e| Error::collateral("enclaveIdentity", e))
    }
}

/// The Intel SGX extensions of a PCK certificate that TCB evaluation needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PckExtensions {
    pub sgx_tcb_comp_svn: [u8; 16],
    pub pcesvn: u16,
    pub cpusvn: [u8; 16],
    pub pce_id: [u8; 2],
    pub fmspc: [u8; 6],
}

const PCK_WHAT: &str = "PCK SGX extension";

/// Parse the value of extension 1.2.840.113741.1.13.1 (a SEQUENCE of (OID, value) pairs).
pub fn parse_pck_extensions(value: &[u8]) -> Result<PckExtensions> {
    use crate::asn1::{
        TAG_INTEGER, TAG_OCTET_STRING, TAG_OID, TAG_SEQUENCE, expect_single, oid_to_string,
        read_tlv, uint_content,
    };
    use crate::oids::intel;
    let mut out = PckExtensions::default();
    let mut seen = 0u32;
    let mut items = expect_single(PCK_WHAT, TAG_SEQUENCE, value)?;
    let mut guard = 0;
    while !items.is_empty() {
        guard += 1;
        if guard > 32 {
            return Err(Error::malformed(PCK_WHAT, 0, "too many entries"));
        }
        let (tag, pair, rest) = read_tlv(PCK_WHAT, items)?;
        items = rest;
        if tag != TAG_SEQUENCE {
            return Err(Error::malformed(PCK_WHAT, 0, "entry is not a SEQUENCE"));
        }
        let (t, oid_c, val) = read_tlv(PCK_WHAT, pair)?;
        if t != TAG_OID {
            return Err(Error::malformed(
                PCK_WHAT,
                0,
                "entry does not start with an OID",
            ));
        }
        let oid = oid_to_string(PCK_WHAT, oid_c)?;
        match oid.as_str() {
            intel::TCB => {
                let mut comps = expect_single(PCK_WHAT, TAG_SEQUENCE, val)?;
                let mut g = 0;
                while !comps.is_empty() {
                    g += 1;
                    if g > 32 {
                        return Err(Error::malformed(PCK_WHAT, 0, "too many TCB entries"));
                    }
                    let (t, c, rest) = read_tlv(PCK_WHAT, comps)?;
                    comps = rest;
                    if t != TAG_SEQUENCE {
                        return Err(Error::malformed(PCK_WHAT, 0, "TCB entry is not a SEQUENCE"));
                    }
                    let (t, oc, v) = read_tlv(PCK_WHAT, c)?;
                    if t != TAG_OID {
                        return Err(Error::malformed(PCK_WHAT, 0, "TCB entry without OID"));
                    }
                    let o = oid_to_string(PCK_WHAT, oc)?;
                    if o == intel::PCESVN {
                        let n = uint_content(PCK_WHAT, expect_single(PCK_WHAT, TAG_INTEGER, v)?)?;
                        out.pcesvn = u16::try_from(n)
                            .map_err(|_| Error::malformed(PCK_WHAT, 0, "PCESVN > 65535"))?;
                        seen |= 1 << 17;
                    } else if o == intel::CPUSVN {
                        let s = expect_single(PCK_WHAT, TAG_OCTET_STRING, v)?;
                        out.cpusvn = s.try_into().map_err(|_| {
                            Error::malformed(PCK_WHAT, 0, "CPUSVN must be 16 bytes")
                        })?;
                        seen |= 1 << 18;
                    } else if let Some(idx) = o
                        .strip_prefix(intel::TCB_COMP_PREFIX)
                        .and_then(|s| s.parse::<usize>().ok())
                        && (1..=16).contains(&idx)
                    {
                        let n = uint_content(PCK_WHAT, expect_single(PCK_WHAT, TAG_INTEGER, v)?)?;
                        out.sgx_tcb_comp_svn[idx - 1] = u8::try_from(n).map_err(|_| {
                            Error::malformed(PCK_WHAT, 0, "TCB component SVN > 255")
                        })?;
                        seen |= 1 << idx;
                    }
                }
            }
            intel::PCE_ID => {
                let s = expect_single(PCK_WHAT, TAG_OCTET_STRING, val)?;
                out.pce_id = s
                    .try_into()
                    .map_err(|_| Error::malformed(PCK_WHAT, 0, "PCE-ID must be 2 bytes"))?;
                seen |= 1 << 20;
            }
            intel::FMSPC => {
                let s = expect_single(PCK_WHAT, TAG_OCTET_STRING, val)?;
                out.fmspc = s
                    .try_into()
                    .map_err(|_| Error::malformed(PCK_WHAT, 0, "FMSPC must be 6 bytes"))?;
                seen |= 1 << 21;
            }
            _ => {}
        }
    }
    let want: u32 = (0x1FFFF & !1) | (1 << 17) | (1 << 18) | (1 << 20) | (1 << 21);
    if seen & want != want {
        return Err(Error::malformed(
            PCK_WHAT,
            0,
            format!("missing entries (mask {:#x} of {want:#x})", seen & want),
        ));
    }
    Ok(out)
}
