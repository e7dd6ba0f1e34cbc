//! The SEV-SNP ATTESTATION_REPORT (AMD SEV-SNP ABI spec 56860, Table 23): a strict parser of the
//! fixed 1184-byte layout for report versions 2, 3 and 5.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::reader::{at, require_zero};

/// Size of an ATTESTATION_REPORT.
pub const REPORT_LEN: usize = 0x4A0;
/// The signed bytes are `report[0..SIGNED_LEN]`.
pub const SIGNED_LEN: usize = 0x2A0;
const WHAT: &str = "SEV-SNP report";

/// An AMD EPYC generation; it selects the TCB layout and the pinned ARK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    /// Name used in KDS URLs and certificate CNs (`SEV-Milan`, `ARK-Milan`).
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }
    /// From the CPUID family/model of a v≥3 report.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Product> {
        match (family, model >> 4) {
            (0x19, 0x0) => Some(Product::Milan),
            (0x19, 0x1) => Some(Product::Genoa),
            (0x1A, 0x0) | (0x1A, 0x1) => Some(Product::Turin),
            _ => None,
        }
    }
    /// From the VCEK/VLEK `productName` extension ("Milan-B0", "Genoa", "Milan").
    pub fn from_product_name(name: &str) -> Option<Product> {
        let base = name.split('-').next().unwrap_or(name);
        match base {
            "Milan" => Some(Product::Milan),
            "Genoa" => Some(Product::Genoa),
            "Turin" => Some(Product::Turin),
            _ => None,
        }
    }
}

/// A TCB_VERSION, decoded according to the product (Turin moves the fields and adds FMC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tcb {
    pub fmc: Option<u8>,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl Tcb {
    pub fn decode(raw: u64, product: Product) -> Tcb {
        let b = raw.to_le_bytes();
        match product {
            Product::Milan | Product::Genoa => Tcb {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            },
            Product::Turin => Tcb {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
        }
    }
    pub fn encode(&self, product: Product) -> u64 {
        let mut b = [0u8; 8];
        match product {
            Product::Milan | Product::Genoa => {
                b[0] = self.bootloader;
                b[1] = self.tee;
                b[6] = self.snp;
                b[7] = self.microcode;
            }
            Product::Turin => {
                b[0] = self.fmc.unwrap_or(0);
                b[1] = self.bootloader;
                b[2] = self.tee;
                b[3] = self.snp;
                b[7] = self.microcode;
            }
        }
        u64::from_le_bytes(b)
    }
}

impl std::fmt::Display for Tcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "fmc={fmc} ")?;
        }
        write!(
            f,
            "bl={} tee={} snp={} ucode={}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// Which key signed the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SigningKey {
    Vcek,
    Vlek,
}

/// Guest POLICY bits (go-sev-guest `abi` positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    pub fn abi_minor(self) -> u8 {
        self.0 as u8
    }
    pub fn abi_major(self) -> u8 {
        (self.0 >> 8) as u8
    }
    pub fn smt(self) -> bool {
        self.0 & (1 << 16) != 0
    }
    pub fn migrate_ma(self) -> bool {
        self.0 & (1 << 18) != 0
    }
    pub fn debug(self) -> bool {
        self.0 & (1 << 19) != 0
    }
    pub fn single_socket(self) -> bool {
        self.0 & (1 << 20) != 0
    }
}

/// A parsed ATTESTATION_REPORT. Keeps the exact bytes for signature verification.
#[derive(Debug, Clone)]
pub struct SnpReport {
    raw: Vec<u8>,
    pub version: u32,
    pub guest_svn: u32,
    pub policy: GuestPolicy,
    pub family_id: [u8; 16],
    pub image_id: [u8; 16],
    pub vmpl: u32,
    pub signature_algo: u32,
    pub current_tcb: u64,
    pub platform_info: u64,
    pub author_key_en: bool,
    pub mask_chip_key: bool,
    pub signing_key: SigningKey,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub id_key_digest: [u8; 48],
    pub author_key_digest: [u8; 48],
    pub report_id: [u8; 32],
    pub report_id_ma: [u8; 32],
    pub reported_tcb: u64,
    /// (family, model, stepping); v≥3 only.
    pub cpuid: Option<(u8, u8, u8)>,
    pub chip_id: [u8; 64],
    pub committed_tcb: u64,
    /// (major, minor, build)
    pub current_version: (u8, u8, u8),
    pub committed_version: (u8, u8, u8),
    pub launch_tcb: u64,
    /// v≥5 only.
    pub launch_mit_vector: Option<u64>,
    pub current_mit_vector: Option<u64>,
    /// Big-endian P-384 scalars.
    pub signature_r: [u8; 48],
    pub signature_s: [u8; 48],
}

fn u32_at(buf: &[u8], off: usize, field: &'static str) -> Result<u32> {
    Ok(u32::from_le_bytes(at(WHAT, field, buf, off)?))
}
fn u64_at(buf: &[u8], off: usize, field: &'static str) -> Result<u64> {
    Ok(u64::from_le_bytes(at(WHAT, field, buf, off)?))
}

/// Convert a 72-byte little-endian signature component into a 48-byte big-endian scalar.
fn scalar_be(buf: &[u8], off: usize, field: &'static str) -> Result<[u8; 48]> {
    let le: [u8; 72] = at(WHAT, field, buf, off)?;
    if let Some(i) = le[48..].iter().position(|b| *b != 0) {
        return Err(Error::malformed(
            WHAT,
            off + 48 + i,
            format!("{field}: bytes 48..72 of a P-384 component must be zero"),
        ));
    }
    let mut be = [0u8; 48];
    for (i, b) in le[..48].iter().enumerate() {
        be[47 - i] = *b;
    }
    Ok(be)
}

impl SnpReport {
    /// Parse exactly [`REPORT_LEN`] bytes.
    pub fn parse(buf: &[u8]) -> Result<SnpReport> {
        if buf.len() != REPORT_LEN {
            return Err(Error::malformed(
                WHAT,
                buf.len().min(REPORT_LEN),
                format!(
                    "length must be {REPORT_LEN:#x} bytes, found {:#x}",
                    buf.len()
                ),
            ));
        }
        let version = u32_at(buf, 0x0, "VERSION")?;
        if !matches!(version, 2 | 3 | 5) {
            return Err(Error::malformed(
                WHAT,
                0,
                format!("VERSION must be 2, 3 or 5, found {version}"),
            ));
        }
        let signature_algo = u32_at(buf, 0x34, "SIGNATURE_ALGO")?;
        if signature_algo != 1 {
            return Err(Error::malformed(
                WHAT,
                0x34,
                format!("SIGNATURE_ALGO must be 1 (ECDSA P-384/SHA-384), found {signature_algo}"),
            ));
        }
        let signer = u32_at(buf, 0x48, "signer info")?;
        if signer >> 5 != 0 {
            return Err(Error::malformed(
                WHAT,
                0x48,
                format!("signer info bits 31:5 must be zero, found {signer:#x}"),
            ));
        }
        let author_key_en = signer & 1 != 0;
        let mask_chip_key = signer & 2 != 0;
        let signing_key = match (signer >> 2) & 7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => {
                return Err(Error::malformed(
                    WHAT,
                    0x48,
                    "SIGNING_KEY = 7: the report is unsigned",
                ));
            }
            k => {
                return Err(Error::malformed(
                    WHAT,
                    0x48,
                    format!("SIGNING_KEY {k} is reserved"),
                ));
            }
        };
        if mask_chip_key {
            return Err(Error::malformed(
                WHAT,
                0x48,
                "MASK_CHIP_KEY = 1: the report signature is zeroed",
            ));
        }
        require_zero(WHAT, buf, 0x4C, 0x50, "reserved 0x4C")?;
        let cpuid = if version >= 3 {
            require_zero(WHAT, buf, 0x18B, 0x1A0, "reserved 0x18B")?;
            Some((buf[0x188], buf[0x189], buf[0x18A]))
        } else {
            require_zero(WHAT, buf, 0x188, 0x1A0, "reserved 0x188 (v2)")?;
            None
        };
        require_zero(WHAT, buf, 0x1EB, 0x1EC, "reserved 0x1EB")?;
        require_zero(WHAT, buf, 0x1EF, 0x1F0, "reserved 0x1EF")?;
        let (launch_mit_vector, current_mit_vector) = if version >= 5 {
            require_zero(WHAT, buf, 0x208, SIGNED_LEN, "reserved 0x208")?;
            (
                Some(u64_at(buf, 0x1F8, "LAUNCH_MIT_VECTOR")?),
                Some(u64_at(buf, 0x200, "CURRENT_MIT_VECTOR")?),
            )
        } else {
            require_zero(WHAT, buf, 0x1F8, SIGNED_LEN, "reserved 0x1F8 (v<5)")?;
            (None, None)
        };
        let signature_r = scalar_be(buf, 0x2A0, "SIGNATURE.R")?;
        let signature_s = scalar_be(buf, 0x2E8, "SIGNATURE.S")?;
        require_zero(WHAT, buf, 0x330, REPORT_LEN, "signature padding")?;

        Ok(SnpReport {
            raw: buf.to_vec(),
            version,
            guest_svn: u32_at(buf, 0x4, "GUEST_SVN")?,
            policy: GuestPolicy(u64_at(buf, 0x8, "POLICY")?),
            family_id: at(WHAT, "FAMILY_ID", buf, 0x10)?,
            image_id: at(WHAT, "IMAGE_ID", buf, 0x20)?,
            vmpl: u32_at(buf, 0x30, "VMPL")?,
            signature_algo,
            current_tcb: u64_at(buf, 0x38, "CURRENT_TCB")?,
            platform_info: u64_at(buf, 0x40, "PLATFORM_INFO")?,
            author_key_en,
            mask_chip_key,
            signing_key,
            report_data: at(WHAT, "REPORT_DATA", buf, 0x50)?,
            measurement: at(WHAT, "MEASUREMENT", buf, 0x90)?,
            host_data: at(WHAT, "HOST_DATA", buf, 0xC0)?,
            id_key_digest: at(WHAT, "ID_KEY_DIGEST", buf, 0xE0)?,
            author_key_digest: at(WHAT, "AUTHOR_KEY_DIGEST", buf, 0x110)?,
            report_id: at(WHAT, "REPORT_ID", buf, 0x140)?,
            report_id_ma: at(WHAT, "REPORT_ID_MA", buf, 0x160)?,
            reported_tcb: u64_at(buf, 0x180, "REPORTED_TCB")?,
            cpuid,
            chip_id: at(WHAT, "CHIP_ID", buf, 0x1A0)?,
            committed_tcb: u64_at(buf, 0x1E0, "COMMITTED_TCB")?,
            current_version: (buf[0x1EA], buf[0x1E9], buf[0x1E8]),
            committed_version: (buf[0x1EE], buf[0x1ED], buf[0x1EC]),
            launch_tcb: u64_at(buf, 0x1F0, "LAUNCH_TCB")?,
            launch_mit_vector,
            current_mit_vector,
            signature_r,
            signature_s,
        })
    }

    /// The whole report as received.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
    /// The bytes covered by the signature.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }
    /// Product from CPUID (v≥3 only).
    pub fn cpuid_product(&self) -> Option<Product> {
        self.cpuid.and_then(|(f, m, _)| Product::from_cpuid(f, m))
    }
    /// Whether a migration agent is bound (REPORT_ID_MA not all 0xFF).
    pub fn has_migration_agent(&self) -> bool {
        self.report_id_ma.iter().any(|b| *b != 0xFF)
    }
}
