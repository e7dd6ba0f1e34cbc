//! The evidence bundle: the hardware evidence plus the certificates and collateral a verifier
//! needs, in one strict binary container. It is what `GET /v1/attestation` returns (base64 in
//! JSON) and what the RA-TLS certificate extension carries (raw bytes).
//!
//! ```text
//! "A3SEVID1" | u16 version=1 | u8 kind | u8 reserved=0 | u16 item_count (≤ 8)
//! item: u16 tag | u32 len | len bytes       (tags unique, in any order; no trailing bytes)
//! ```

use serde::{Deserialize, Serialize};

use crate::TeeKind;
use crate::error::{Error, Result};
use crate::reader::Reader;

pub const BUNDLE_MAGIC: &[u8; 8] = b"A3SEVID1";
const WHAT: &str = "evidence bundle";
/// No item may exceed this (a TDX collateral JSON is ~20 KiB; a quote ~8 KiB).
pub const MAX_ITEM_LEN: usize = 256 * 1024;
const MAX_ITEMS: u16 = 8;

const TAG_EVIDENCE: u16 = 1;
const TAG_LEAF: u16 = 2;
const TAG_INTERMEDIATE: u16 = 3;
const TAG_ROOT: u16 = 4;
const TAG_TDX_COLLATERAL: u16 = 5;

/// Evidence and what is needed to verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceBundle {
    pub kind: TeeKind,
    /// SNP/simulated: the 1184-byte report. TDX: the quote.
    pub evidence: Vec<u8>,
    /// VCEK or VLEK (DER). Absent: fetch from AMD KDS.
    pub leaf_cert: Option<Vec<u8>>,
    /// ASK or ASVK (DER). Absent: use the built-in one.
    pub intermediate_cert: Option<Vec<u8>>,
    /// ARK (DER). Absent: use the pinned one. When present it must equal the pinned one.
    pub root_cert: Option<Vec<u8>>,
    /// TDX collateral in dcap-qvl's JSON shape.
    pub tdx_collateral: Option<Vec<u8>>,
}

impl EvidenceBundle {
    pub fn new(kind: TeeKind, evidence: Vec<u8>) -> Self {
        EvidenceBundle {
            kind,
            evidence,
            leaf_cert: None,
            intermediate_cert: None,
            root_cert: None,
            tdx_collateral: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut items: Vec<(u16, &[u8])> = vec![(TAG_EVIDENCE, &self.evidence)];
        for (tag, v) in [
            (TAG_LEAF, &self.leaf_cert),
            (TAG_INTERMEDIATE, &self.intermediate_cert),
            (TAG_ROOT, &self.root_cert),
            (TAG_TDX_COLLATERAL, &self.tdx_collateral),
        ] {
            if let Some(v) = v {
                items.push((tag, v));
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(BUNDLE_MAGIC);
        out.extend_from_slice(&1u16.to_le_bytes());
        out.push(self.kind.code());
        out.push(0);
        out.extend_from_slice(&(items.len() as u16).to_le_bytes());
        for (tag, v) in items {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<EvidenceBundle> {
        let mut r = Reader::new(WHAT, buf);
        let magic = r.take("magic", 8)?;
        if magic != BUNDLE_MAGIC {
            return Err(Error::malformed(WHAT, 0, "magic is not \"A3SEVID1\""));
        }
        let version = r.u16_le("version")?;
        if version != 1 {
            return Err(Error::malformed(
                WHAT,
                8,
                format!("version {version} unsupported, expected 1"),
            ));
        }
        let kind_code = r.u8("kind")?;
        let kind = TeeKind::from_code(kind_code)
            .ok_or_else(|| Error::malformed(WHAT, 10, format!("unknown TEE kind {kind_code}")))?;
        if r.u8("reserved")? != 0 {
            return Err(Error::malformed(WHAT, 11, "reserved byte must be zero"));
        }
        let count = r.u16_le("item_count")?;
        if count == 0 || count > MAX_ITEMS {
            return Err(Error::malformed(
                WHAT,
                12,
                format!("item_count {count} not in 1..={MAX_ITEMS}"),
            ));
        }
        let mut b = EvidenceBundle::new(kind, Vec::new());
        let mut seen = [false; 6];
        for _ in 0..count {
            let off = r.pos();
            let tag = r.u16_le("item tag")?;
            let len = r.u32_le("item length")? as usize;
            if len > MAX_ITEM_LEN {
                return Err(Error::malformed(
                    WHAT,
                    off + 2,
                    format!("item length {len} exceeds {MAX_ITEM_LEN}"),
                ));
            }
            let v = r.take("item value", len)?;
            let slot = match tag {
                TAG_EVIDENCE => &mut seen[1],
                TAG_LEAF => &mut seen[2],
                TAG_INTERMEDIATE => &mut seen[3],
                TAG_ROOT => &mut seen[4],
                TAG_TDX_COLLATERAL => &mut seen[5],
                t => return Err(Error::malformed(WHAT, off, format!("unknown item tag {t}"))),
            };
            if *slot {
                return Err(Error::malformed(
                    WHAT,
                    off,
                    format!("duplicate item tag {tag}"),
                ));
            }
            *slot = true;
            let v = v.to_vec();
            match tag {
                TAG_EVIDENCE => b.evidence = v,
                TAG_LEAF => b.leaf_cert = Some(v),
                TAG_INTERMEDIATE => b.intermediate_cert = Some(v),
                TAG_ROOT => b.root_cert = Some(v),
                _ => b.tdx_collateral = Some(v),
            }
        }
        if !seen[1] {
            return Err(Error::malformed(WHAT, r.pos(), "no evidence item (tag 1)"));
        }
        if r.remaining() != 0 {
            return Err(Error::malformed(
                WHAT,
                r.pos(),
                format!("{} trailing bytes", r.remaining()),
            ));
        }
        Ok(b)
    }
}

/// The JSON body of `GET /v1/attestation` (and the CLI's `--bundle` files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestationDocument {
    pub tee_type: TeeKind,
    /// Base64 of [`EvidenceBundle::encode`].
    pub evidence_bundle: String,
    /// Hex inputs the attester used (informational: the verifier recomputes from its own).
    pub nonce: String,
    pub tls_spki_sha256: String,
    pub model_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl AttestationDocument {
    pub fn bundle(&self) -> Result<EvidenceBundle> {
        use base64::Engine;
        if self.evidence_bundle.len() > 4 * MAX_ITEM_LEN {
            return Err(Error::malformed(WHAT, 0, "evidenceBundle too long"));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&self.evidence_bundle)
            .map_err(|e| Error::malformed(WHAT, 0, format!("evidenceBundle base64: {e}")))?;
        let b = EvidenceBundle::decode(&raw)?;
        if b.kind != self.tee_type {
            return Err(Error::malformed(
                WHAT,
                10,
                format!(
                    "teeType {:?} disagrees with bundle kind {:?}",
                    self.tee_type, b.kind
                ),
            ));
        }
        Ok(b)
    }
}

impl AttestationDocument {
    /// The document a server returns for `bundle`, produced with `report_data` inputs.
    pub fn from_bundle(
        bundle: &EvidenceBundle,
        inputs: &crate::ReportData,
        model: Option<String>,
    ) -> Self {
        use base64::Engine;
        AttestationDocument {
            tee_type: bundle.kind,
            evidence_bundle: base64::engine::general_purpose::STANDARD.encode(bundle.encode()),
            nonce: hex::encode(inputs.nonce),
            tls_spki_sha256: hex::encode(inputs.tls_spki_sha256),
            model_sha256: hex::encode(inputs.model_sha256),
            model,
        }
    }
}
