//! Intel TDX quote v4/v5 (DCAP quote format): strict parse of the header, the TD 1.0/1.5 body,
//! the ECDSA signature data and the nested certification data (type 6 → QE report → type 5 PEM
//! chain). Bytes after the signature data are tolerated and never hashed.

use crate::error::{Error, Result};
use crate::reader::Reader;

const WHAT: &str = "TDX quote";
pub const HEADER_LEN: usize = 48;
pub const TD10_BODY_LEN: usize = 584;
pub const TD15_BODY_LEN: usize = 648;
pub const QE_REPORT_LEN: usize = 384;
pub const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
];
/// Upper bound of the signature data we accept (real ones are ~4.5 KiB).
pub const MAX_SIG_DATA_LEN: usize = 64 * 1024;

/// A TD report body (TD 1.0; the TD 1.5 fields are `Some`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReportBody {
    pub tee_tcb_svn: [u8; 16],
    pub mr_seam: [u8; 48],
    pub mr_signer_seam: [u8; 48],
    pub seam_attributes: u64,
    pub td_attributes: u64,
    pub xfam: u64,
    pub mr_td: [u8; 48],
    pub mr_config_id: [u8; 48],
    pub mr_owner: [u8; 48],
    pub mr_owner_config: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    pub report_data: [u8; 64],
    pub tee_tcb_svn2: Option<[u8; 16]>,
    pub mr_service_td: Option<[u8; 48]>,
}

impl TdReportBody {
    pub fn debug(&self) -> bool {
        self.td_attributes & 1 != 0
    }
    pub fn sept_ve_disable(&self) -> bool {
        self.td_attributes & (1 << 28) != 0
    }
    /// Reserved TDATTRIBUTES bits that are set (bits 7:1 and 29 ... per ATTESTATION.md §2.2).
    pub fn reserved_attributes(&self) -> u64 {
        let known: u64 = 1 | (1 << 28) | (1 << 30) | (1 << 31) | (1 << 63);
        let low_reserved: u64 = 0xFE | (1 << 29);
        self.td_attributes & low_reserved & !known
    }
}

/// The SGX REPORT body of the Quoting Enclave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QeReport {
    pub raw: [u8; QE_REPORT_LEN],
    pub cpu_svn: [u8; 16],
    pub misc_select: u32,
    pub attributes: [u8; 16],
    pub mr_enclave: [u8; 32],
    pub mr_signer: [u8; 32],
    pub isv_prod_id: u16,
    pub isv_svn: u16,
    pub report_data: [u8; 64],
}

impl QeReport {
    pub fn parse(b: &[u8]) -> Result<QeReport> {
        let mut r = Reader::new("QE report", b);
        let raw: [u8; QE_REPORT_LEN] = r.array("QE report")?;
        let mut f = Reader::new("QE report", &raw);
        let cpu_svn = f.array("CPUSVN")?;
        let misc_select = f.u32_le("MISCSELECT")?;
        f.take("reserved", 28)?;
        let attributes = f.array("ATTRIBUTES")?;
        let mr_enclave = f.array("MRENCLAVE")?;
        f.take("reserved", 32)?;
        let mr_signer = f.array("MRSIGNER")?;
        f.take("reserved", 96)?;
        let isv_prod_id = f.u16_le("ISVPRODID")?;
        let isv_svn = f.u16_le("ISVSVN")?;
        f.take("reserved", 60)?;
        let report_data = f.array("REPORTDATA")?;
        Ok(QeReport {
            raw,
            cpu_svn,
            misc_select,
            attributes,
            mr_enclave,
            mr_signer,
            isv_prod_id,
            isv_svn,
            report_data,
        })
    }
}

/// A parsed quote. `signed` is the exact region covered by the quote signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxQuote {
    pub version: u16,
    pub body_type: u16,
    pub user_data: [u8; 20],
    pub body: TdReportBody,
    signed: Vec<u8>,
    /// ECDSA P-256 `r‖s`, big-endian.
    pub signature: [u8; 64],
    /// Attestation public key `x‖y`, big-endian.
    pub attestation_key: [u8; 64],
    pub qe_report: QeReport,
    pub qe_report_signature: [u8; 64],
    pub qe_auth_data: Vec<u8>,
    /// PEM text of the PCK chain (trailing NUL stripped).
    pub pck_chain_pem: Vec<u8>,
    /// Bytes after the signature data (ignored).
    pub trailing_len: usize,
}

fn body(r: &mut Reader<'_>, td15: bool) -> Result<TdReportBody> {
    let mut rtmr = [[0u8; 48]; 4];
    let tee_tcb_svn = r.array("TEE_TCB_SVN")?;
    let mr_seam = r.array("MRSEAM")?;
    let mr_signer_seam = r.array("MRSIGNERSEAM")?;
    let seam_attributes = r.u64_le("SEAMATTRIBUTES")?;
    let td_attributes = r.u64_le("TDATTRIBUTES")?;
    let xfam = r.u64_le("XFAM")?;
    let mr_td = r.array("MRTD")?;
    let mr_config_id = r.array("MRCONFIGID")?;
    let mr_owner = r.array("MROWNER")?;
    let mr_owner_config = r.array("MROWNERCONFIG")?;
    for (i, slot) in rtmr.iter_mut().enumerate() {
        *slot = r.array(["RTMR0", "RTMR1", "RTMR2", "RTMR3"][i])?;
    }
    let report_data = r.array("REPORTDATA")?;
    let (tee_tcb_svn2, mr_service_td) = if td15 {
        (
            Some(r.array("TEE_TCB_SVN2")?),
            Some(r.array("MRSERVICETD")?),
        )
    } else {
        (None, None)
    };
    Ok(TdReportBody {
        tee_tcb_svn,
        mr_seam,
        mr_signer_seam,
        seam_attributes,
        td_attributes,
        xfam,
        mr_td,
        mr_config_id,
        mr_owner,
        mr_owner_config,
        rtmr,
        report_data,
        tee_tcb_svn2,
        mr_service_td,
    })
}

impl TdxQuote {
    pub fn parse(buf: &[u8]) -> Result<TdxQuote> {
        let mut r = Reader::new(WHAT, buf);
        let version = r.u16_le("VERSION")?;
        if version != 4 && version != 5 {
            return Err(Error::malformed(
                WHAT,
                0,
                format!("VERSION must be 4 or 5, found {version}"),
            ));
        }
        let key_type = r.u16_le("ATT_KEY_TYPE")?;
        if key_type != 2 {
            return Err(Error::malformed(
                WHAT,
                2,
                format!("ATT_KEY_TYPE must be 2 (ECDSA P-256), found {key_type}"),
            ));
        }
        let tee_type = r.u32_le("TEE_TYPE")?;
        if tee_type != 0x81 {
            return Err(Error::malformed(
                WHAT,
                4,
                format!("TEE_TYPE must be 0x81 (TDX), found {tee_type:#x}"),
            ));
        }
        r.take("reserved", 4)?;
        let vendor: [u8; 16] = r.array("QE_VENDOR_ID")?;
        if vendor != INTEL_QE_VENDOR_ID {
            return Err(Error::malformed(
                WHAT,
                12,
                format!("QE_VENDOR_ID {} is not Intel's", hex::encode(vendor)),
            ));
        }
        let user_data = r.array("USER_DATA")?;
        let (body_type, body) = if version == 4 {
            (2, body(&mut r, false)?)
        } else {
            let off = r.pos();
            let body_type = r.u16_le("BODY_TYPE")?;
            let body_size = r.u32_le("BODY_SIZE")? as usize;
            let (td15, want) = match body_type {
                2 => (false, TD10_BODY_LEN),
                3 => (true, TD15_BODY_LEN),
                t => {
                    return Err(Error::malformed(
                        WHAT,
                        off,
                        format!("BODY_TYPE must be 2 or 3 (TD report), found {t}"),
                    ));
                }
            };
            if body_size != want {
                return Err(Error::malformed(
                    WHAT,
                    off + 2,
                    format!("BODY_SIZE for type {body_type} must be {want}, found {body_size}"),
                ));
            }
            (body_type, body(&mut r, td15)?)
        };
        let signed = buf[..r.pos()].to_vec();
        let sig_len_off = r.pos();
        let sig_len = r.u32_le("SIG_DATA_LEN")? as usize;
        if sig_len > MAX_SIG_DATA_LEN {
            return Err(Error::malformed(
                WHAT,
                sig_len_off,
                format!("SIG_DATA_LEN {sig_len} exceeds {MAX_SIG_DATA_LEN}"),
            ));
        }
        let sig_start = r.pos();
        let sig_data = r.take("signature data", sig_len)?;
        let trailing_len = r.remaining();

        let mut s = Reader::new("TDX quote signature data", sig_data);
        let signature = s.array("quote signature")?;
        let attestation_key = s.array("attestation key")?;
        let ct = s.u16_le("CERT_DATA_TYPE")?;
        if ct != 6 {
            return Err(Error::malformed(
                WHAT,
                sig_start + 128,
                format!("CERT_DATA_TYPE must be 6 (QE report certification data), found {ct}"),
            ));
        }
        let cd_len = s.u32_le("CERT_DATA_SIZE")? as usize;
        let cd = s.take("certification data", cd_len)?;
        if s.remaining() != 0 {
            return Err(Error::malformed(
                WHAT,
                sig_start + s.pos(),
                format!(
                    "{} bytes after certification data inside SIG_DATA_LEN",
                    s.remaining()
                ),
            ));
        }
        let cd_off = sig_start + 134;
        let mut c = Reader::new("QE certification data", cd);
        let qe_report = QeReport::parse(c.take("QE report", QE_REPORT_LEN)?)?;
        let qe_report_signature = c.array("QE report signature")?;
        let auth_len = c.u16_le("QE_AUTH_DATA_SIZE")? as usize;
        let qe_auth_data = c.take("QE_AUTH_DATA", auth_len)?.to_vec();
        let inner_off = cd_off + c.pos();
        let inner = c.u16_le("inner CERT_DATA_TYPE")?;
        if inner != 5 {
            return Err(Error::malformed(
                WHAT,
                inner_off,
                format!("inner CERT_DATA_TYPE must be 5 (PCK chain), found {inner}"),
            ));
        }
        let pem_len = c.u32_le("inner CERT_DATA_SIZE")? as usize;
        let pem = c.take("PCK chain", pem_len)?;
        if c.remaining() != 0 {
            return Err(Error::malformed(
                WHAT,
                cd_off + c.pos(),
                format!("{} bytes after the PCK chain", c.remaining()),
            ));
        }
        let end = pem.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        Ok(TdxQuote {
            version,
            body_type,
            user_data,
            body,
            signed,
            signature,
            attestation_key,
            qe_report,
            qe_report_signature,
            qe_auth_data,
            pck_chain_pem: pem[..end].to_vec(),
            trailing_len,
        })
    }

    /// Bytes covered by the quote signature (header ‖ [v5 type+size] ‖ body).
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed
    }
}
