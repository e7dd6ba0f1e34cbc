//! Guest-side evidence providers behind one [`Attester`] trait: configfs-tsm (SNP and TDX, with
//! the SNP certificate table from the auxblob) and simulated. Auto-detected at start;
//! `A3S_TEE_SIMULATE=1` forces simulation.

use std::path::{Path, PathBuf};

use crate::TeeKind;
use crate::error::{Error, Result};
use crate::evidence::EvidenceBundle;
use crate::reader::Reader;
use crate::simulated::{SimulatedAuthority, executable_measurement};

/// Produces evidence binding 64 bytes of report_data.
pub trait Attester: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> TeeKind;
    fn attest(&self, report_data: &[u8; 64]) -> Result<EvidenceBundle>;
}

/// Simulated evidence under the development chain.
#[derive(Debug, Clone)]
pub struct SimulatedAttester {
    pub measurement: [u8; 48],
}

impl SimulatedAttester {
    /// Measurement = SHA-384 of the running executable.
    pub fn new() -> Result<Self> {
        Ok(SimulatedAttester {
            measurement: executable_measurement()?,
        })
    }
    pub fn with_measurement(measurement: [u8; 48]) -> Self {
        SimulatedAttester { measurement }
    }
}

impl Attester for SimulatedAttester {
    fn kind(&self) -> TeeKind {
        TeeKind::Simulated
    }
    fn attest(&self, report_data: &[u8; 64]) -> Result<EvidenceBundle> {
        Ok(SimulatedAuthority::default_authority()?.bundle(report_data, &self.measurement))
    }
}

/// Linux configfs-tsm (`/sys/kernel/config/tsm/report`).
#[derive(Debug, Clone)]
pub struct TsmAttester {
    root: PathBuf,
    kind: TeeKind,
}

pub const TSM_ROOT: &str = "/sys/kernel/config/tsm/report";

fn rd(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| Error::io(p.display(), e))
}

impl TsmAttester {
    /// Probe `root`: create an entry and read its `provider` ("sev_guest" or "tdx_guest").
    pub fn probe(root: &Path) -> Result<TsmAttester> {
        let entry = root.join(format!("a3s-probe-{}", std::process::id()));
        std::fs::create_dir(&entry).map_err(|e| Error::io(entry.display(), e))?;
        let provider = rd(&entry.join("provider"));
        let _ = std::fs::remove_dir(&entry);
        let provider = String::from_utf8_lossy(&provider?).trim().to_string();
        let kind = match provider.as_str() {
            "sev_guest" => TeeKind::SevSnp,
            "tdx_guest" => TeeKind::Tdx,
            p => {
                return Err(Error::NoTee(format!(
                    "configfs-tsm provider {p:?} is not sev_guest or tdx_guest"
                )));
            }
        };
        Ok(TsmAttester {
            root: root.to_path_buf(),
            kind,
        })
    }
}

impl Attester for TsmAttester {
    fn kind(&self) -> TeeKind {
        self.kind
    }
    fn attest(&self, report_data: &[u8; 64]) -> Result<EvidenceBundle> {
        let entry = self.root.join(format!(
            "a3s-{}-{:x}",
            std::process::id(),
            rand_core::RngCore::next_u64(&mut rand_core::OsRng)
        ));
        std::fs::create_dir(&entry).map_err(|e| Error::io(entry.display(), e))?;
        let result = (|| {
            let gen_before = rd(&entry.join("generation"))?;
            std::fs::write(entry.join("inblob"), report_data)
                .map_err(|e| Error::io(entry.join("inblob").display(), e))?;
            let out = rd(&entry.join("outblob"))?;
            let aux = if self.kind == TeeKind::SevSnp {
                rd(&entry.join("auxblob")).ok()
            } else {
                None
            };
            let gen_after = rd(&entry.join("generation"))?;
            // Another writer raced us between inblob and outblob: the report is not ours.
            if String::from_utf8_lossy(&gen_after)
                .trim()
                .parse::<u64>()
                .ok()
                != String::from_utf8_lossy(&gen_before)
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .map(|g| g + 1)
            {
                return Err(Error::NoTee(
                    "configfs-tsm generation changed concurrently".into(),
                ));
            }
            let mut b = EvidenceBundle::new(self.kind, out);
            if let Some(aux) = aux.filter(|a| !a.is_empty()) {
                let certs = parse_snp_cert_table(&aux)?;
                b.leaf_cert = certs.vcek.or(certs.vlek);
                b.intermediate_cert = certs.ask;
                b.root_cert = certs.ark;
            }
            Ok(b)
        })();
        let _ = std::fs::remove_dir(&entry);
        result
    }
}

/// Certificates from the SEV-SNP extended-report certificate table (GUID table).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnpCertTable {
    pub vcek: Option<Vec<u8>>,
    pub vlek: Option<Vec<u8>>,
    pub ask: Option<Vec<u8>>,
    pub ark: Option<Vec<u8>>,
}

// GUIDs in their in-memory (mixed-endian) layout.
const GUID_VCEK: [u8; 16] = guid(
    0x63da758d,
    0xe664,
    0x4564,
    [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd],
);
const GUID_VLEK: [u8; 16] = guid(
    0xa8074bc2,
    0xa25a,
    0x483e,
    [0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8, 0xa1],
);
const GUID_ASK: [u8; 16] = guid(
    0x4ab7b379,
    0xbbac,
    0x4fe4,
    [0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82],
);
const GUID_ARK: [u8; 16] = guid(
    0xc0b406a4,
    0xa803,
    0x4952,
    [0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae],
);

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// Encode a certificate table (used by tests and the simulated host).
pub fn encode_snp_cert_table(t: &SnpCertTable) -> Vec<u8> {
    let entries: Vec<([u8; 16], &Vec<u8>)> = [
        (GUID_VCEK, &t.vcek),
        (GUID_VLEK, &t.vlek),
        (GUID_ASK, &t.ask),
        (GUID_ARK, &t.ark),
    ]
    .into_iter()
    .filter_map(|(g, c)| c.as_ref().map(|c| (g, c)))
    .collect();
    let mut off = (entries.len() + 1) * 24;
    let mut head = Vec::new();
    let mut body = Vec::new();
    for (g, c) in &entries {
        head.extend_from_slice(g);
        head.extend_from_slice(&(off as u32).to_le_bytes());
        head.extend_from_slice(&(c.len() as u32).to_le_bytes());
        body.extend_from_slice(c);
        off += c.len();
    }
    head.extend_from_slice(&[0u8; 24]);
    head.extend_from_slice(&body);
    head
}

/// Parse the GUID table: entries (guid16, offset u32, length u32) ending with an all-zero entry;
/// every range must lie inside the blob. Unknown GUIDs are ignored; duplicates are errors.
pub fn parse_snp_cert_table(blob: &[u8]) -> Result<SnpCertTable> {
    const WHAT: &str = "SNP certificate table";
    let mut r = Reader::new(WHAT, blob);
    let mut t = SnpCertTable::default();
    for i in 0..64 {
        let g: [u8; 16] = r.array("GUID")?;
        let off = r.u32_le("offset")? as usize;
        let len = r.u32_le("length")? as usize;
        if g == [0; 16] {
            if off != 0 || len != 0 {
                return Err(Error::malformed(
                    WHAT,
                    i * 24,
                    "terminator entry must be all zero",
                ));
            }
            return Ok(t);
        }
        let end = off
            .checked_add(len)
            .filter(|e| *e <= blob.len())
            .ok_or_else(|| {
                Error::malformed(
                    WHAT,
                    i * 24 + 16,
                    format!(
                        "entry {i} range {off}+{len} outside the {}-byte blob",
                        blob.len()
                    ),
                )
            })?;
        let slot = match g {
            GUID_VCEK => &mut t.vcek,
            GUID_VLEK => &mut t.vlek,
            GUID_ASK => &mut t.ask,
            GUID_ARK => &mut t.ark,
            _ => continue,
        };
        if slot.is_some() {
            return Err(Error::malformed(WHAT, i * 24, "duplicate GUID"));
        }
        *slot = Some(blob[off..end].to_vec());
    }
    Err(Error::malformed(
        WHAT,
        64 * 24,
        "no terminator within 64 entries",
    ))
}

/// Pick the provider: `A3S_TEE_SIMULATE=1` → simulated; configfs-tsm when present; otherwise an
/// error naming what was looked for (callers decide whether to fall back to simulation).
pub fn detect() -> Result<Box<dyn Attester>> {
    if std::env::var("A3S_TEE_SIMULATE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        return Ok(Box::new(SimulatedAttester::new()?));
    }
    let root = Path::new(TSM_ROOT);
    if root.is_dir() {
        return Ok(Box::new(TsmAttester::probe(root)?));
    }
    Err(Error::NoTee(format!(
        "no {TSM_ROOT} (configfs-tsm) in this guest; set A3S_TEE_SIMULATE=1 for simulated evidence"
    )))
}
