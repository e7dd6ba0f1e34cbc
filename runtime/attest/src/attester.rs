//! Guest-side evidence providers behind one [`Attester`] trait: configfs-tsm (SNP and TDX, with
//! the SNP certificate table from the auxblob), the `/dev/sev-guest` ioctl (SNP, through the `sev`
//! crate) and simulated. Auto-detected at start in that order ([`Detection`]);
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

/// The SEV guest device of the Linux `sev-guest` driver.
pub const SEV_GUEST_DEVICE: &str = "/dev/sev-guest";

/// One SNP_GET_EXT_REPORT request: the raw report and the host's certificate table (empty when
/// the host supplies none). The real implementation is the ioctl; tests inject their own.
pub trait SevGuestDevice: Send + Sync + std::fmt::Debug {
    fn extended_report(&self, report_data: &[u8; 64], vmpl: u32)
    -> Result<(Vec<u8>, SnpCertTable)>;
}

/// SEV-SNP evidence from `/dev/sev-guest`.
#[derive(Debug)]
pub struct SevGuestAttester {
    device: Box<dyn SevGuestDevice>,
    vmpl: u32,
}

impl SevGuestAttester {
    /// Open the device at `path` (which must be [`SEV_GUEST_DEVICE`]: the `sev` crate opens that
    /// path itself). Fails with [`Error::NoTee`] naming the path when it is absent or unusable.
    pub fn open(path: &Path) -> Result<SevGuestAttester> {
        if !path.exists() {
            return Err(Error::NoTee(format!(
                "{} does not exist: not an SEV-SNP guest (or the sev-guest driver is not loaded)",
                path.display()
            )));
        }
        if path != Path::new(SEV_GUEST_DEVICE) {
            return Err(Error::NoTee(format!(
                "{}: the SNP ioctl provider opens {SEV_GUEST_DEVICE} only",
                path.display()
            )));
        }
        Ok(SevGuestAttester::with_device(Box::new(
            sev_ioctl::IoctlDevice::open()?,
        )))
    }
    /// Use `device` (tests, or another transport), requesting reports at VMPL 0.
    pub fn with_device(device: Box<dyn SevGuestDevice>) -> SevGuestAttester {
        SevGuestAttester { device, vmpl: 0 }
    }
    /// Request reports at `vmpl` (0..=3) instead of 0.
    pub fn at_vmpl(mut self, vmpl: u32) -> Self {
        self.vmpl = vmpl;
        self
    }
}

impl Attester for SevGuestAttester {
    fn kind(&self) -> TeeKind {
        TeeKind::SevSnp
    }
    fn attest(&self, report_data: &[u8; 64]) -> Result<EvidenceBundle> {
        let (report, certs) = self.device.extended_report(report_data, self.vmpl)?;
        snp_bundle_from_device(report, certs, report_data)
    }
}

/// The evidence bundle for a report and certificate table from the SEV guest device: the report
/// must parse and bind `report_data`; the leaf is the certificate of the key that signed it
/// (VCEK or VLEK), then ASK/ASVK and ARK when the host supplied them.
pub fn snp_bundle_from_device(
    report: Vec<u8>,
    certs: SnpCertTable,
    report_data: &[u8; 64],
) -> Result<EvidenceBundle> {
    let parsed = crate::snp::SnpReport::parse(&report)?;
    if &parsed.report_data != report_data {
        return Err(Error::malformed(
            "SEV-SNP report",
            0x50,
            "REPORT_DATA differs from the requested report_data",
        ));
    }
    let leaf = match parsed.signing_key {
        crate::snp::SigningKey::Vcek => certs.vcek,
        crate::snp::SigningKey::Vlek => certs.vlek,
    };
    let mut b = EvidenceBundle::new(TeeKind::SevSnp, report);
    b.leaf_cert = leaf.filter(|c| !c.is_empty());
    b.intermediate_cert = certs.ask.filter(|c| !c.is_empty());
    b.root_cert = certs.ark.filter(|c| !c.is_empty());
    Ok(b)
}

/// The ioctl itself (Linux with the `sev-guest` feature); elsewhere opening fails clearly.
#[cfg(all(target_os = "linux", feature = "sev-guest"))]
mod sev_ioctl {
    use std::sync::Mutex;

    use sev::firmware::guest::Firmware;
    use sev::firmware::host::{CertTableEntry, CertType};

    use super::{SEV_GUEST_DEVICE, SevGuestDevice, SnpCertTable};
    use crate::error::{Error, Result};

    #[derive(Debug)]
    pub(super) struct IoctlDevice(Mutex<Firmware>);

    impl IoctlDevice {
        pub(super) fn open() -> Result<IoctlDevice> {
            Firmware::open()
                .map(|f| IoctlDevice(Mutex::new(f)))
                .map_err(|e| Error::NoTee(format!("opening {SEV_GUEST_DEVICE}: {e}")))
        }
    }

    impl SevGuestDevice for IoctlDevice {
        fn extended_report(
            &self,
            report_data: &[u8; 64],
            vmpl: u32,
        ) -> Result<(Vec<u8>, SnpCertTable)> {
            let mut fw = self
                .0
                .lock()
                .map_err(|_| Error::NoTee(format!("{SEV_GUEST_DEVICE}: lock poisoned")))?;
            match fw.get_ext_report(None, Some(*report_data), Some(vmpl)) {
                Ok((report, certs)) => Ok((report, cert_table(certs.as_deref().unwrap_or(&[])))),
                // Some hosts refuse the extended request; the plain report still verifies with
                // certificates from KDS.
                Err(ext) => fw
                    .get_report(None, Some(*report_data), Some(vmpl))
                    .map(|r| (r, SnpCertTable::default()))
                    .map_err(|e| {
                        Error::NoTee(format!(
                            "{SEV_GUEST_DEVICE}: SNP_GET_EXT_REPORT failed ({ext}), \
                             SNP_GET_REPORT failed ({e})"
                        ))
                    }),
            }
        }
    }

    /// Our certificate table from the `sev` crate's entries (CRLs and unknown GUIDs dropped).
    pub(crate) fn cert_table(entries: &[CertTableEntry]) -> SnpCertTable {
        let mut t = SnpCertTable::default();
        for e in entries {
            let slot = match e.cert_type {
                CertType::VCEK => &mut t.vcek,
                CertType::VLEK => &mut t.vlek,
                CertType::ASK => &mut t.ask,
                CertType::ARK => &mut t.ark,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(e.data.clone());
            }
        }
        t
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn sev_cert_entries_map_to_the_table() {
            let t = cert_table(&[
                CertTableEntry::new(CertType::ARK, vec![4]),
                CertTableEntry::new(CertType::VCEK, vec![1]),
                CertTableEntry::new(CertType::CRL, vec![9]),
                CertTableEntry::new(CertType::ASK, vec![3]),
                CertTableEntry::new(CertType::VCEK, vec![7]),
            ]);
            assert_eq!(
                t,
                SnpCertTable {
                    vcek: Some(vec![1]),
                    vlek: None,
                    ask: Some(vec![3]),
                    ark: Some(vec![4]),
                }
            );
            assert_eq!(cert_table(&[]), SnpCertTable::default());
        }
    }
}

#[cfg(not(all(target_os = "linux", feature = "sev-guest")))]
mod sev_ioctl {
    use super::SEV_GUEST_DEVICE;
    use crate::error::{Error, Result};

    #[derive(Debug)]
    pub(super) struct IoctlDevice;

    impl IoctlDevice {
        pub(super) fn open() -> Result<IoctlDevice> {
            Err(Error::NoTee(format!(
                "{SEV_GUEST_DEVICE}: built without the sev-guest feature (Linux only)"
            )))
        }
    }

    impl super::SevGuestDevice for IoctlDevice {
        fn extended_report(&self, _: &[u8; 64], _: u32) -> Result<(Vec<u8>, super::SnpCertTable)> {
            Err(Error::NoTee(format!("{SEV_GUEST_DEVICE}: unsupported")))
        }
    }
}

/// A provider detection can pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    ConfigfsTsm(PathBuf),
    SevGuest(PathBuf),
    Simulated,
}

/// Provider auto-detection: configfs-tsm, then `/dev/sev-guest`, then simulated evidence when
/// allowed; forced simulation (`A3S_TEE_SIMULATE=1`) skips the hardware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub tsm_root: PathBuf,
    pub sev_guest_device: PathBuf,
    /// Use simulated evidence whatever the hardware.
    pub force_simulated: bool,
    /// Fall back to simulated evidence when no TEE is found.
    pub allow_simulated: bool,
}

impl Default for Detection {
    fn default() -> Self {
        Detection {
            tsm_root: PathBuf::from(TSM_ROOT),
            sev_guest_device: PathBuf::from(SEV_GUEST_DEVICE),
            force_simulated: false,
            allow_simulated: false,
        }
    }
}

/// `A3S_TEE_SIMULATE` is `1` or `true`.
pub fn simulate_from_env() -> bool {
    std::env::var("A3S_TEE_SIMULATE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

impl Detection {
    /// The default paths, with `force_simulated` from `A3S_TEE_SIMULATE`.
    pub fn from_env() -> Detection {
        Detection {
            force_simulated: simulate_from_env(),
            ..Detection::default()
        }
    }

    /// The providers present, in the order they are tried.
    pub fn candidates(&self) -> Vec<Provider> {
        if self.force_simulated {
            return vec![Provider::Simulated];
        }
        let mut v = Vec::new();
        if self.tsm_root.is_dir() {
            v.push(Provider::ConfigfsTsm(self.tsm_root.clone()));
        }
        if self.sev_guest_device.exists() {
            v.push(Provider::SevGuest(self.sev_guest_device.clone()));
        }
        if self.allow_simulated {
            v.push(Provider::Simulated);
        }
        v
    }

    /// Open the first candidate that works.
    pub fn open(&self) -> Result<Box<dyn Attester>> {
        self.open_with(|p| Ok(Box::new(SevGuestAttester::open(p)?)))
    }

    /// [`Detection::open`] with the `/dev/sev-guest` opener injected (tests).
    pub fn open_with(
        &self,
        open_sev_guest: impl Fn(&Path) -> Result<Box<dyn Attester>>,
    ) -> Result<Box<dyn Attester>> {
        let mut errors = Vec::new();
        for c in self.candidates() {
            let r: Result<Box<dyn Attester>> = match &c {
                Provider::ConfigfsTsm(root) => {
                    TsmAttester::probe(root).map(|a| Box::new(a) as Box<dyn Attester>)
                }
                Provider::SevGuest(dev) => open_sev_guest(dev),
                Provider::Simulated => {
                    SimulatedAttester::new().map(|a| Box::new(a) as Box<dyn Attester>)
                }
            };
            match r {
                Ok(a) => return Ok(a),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let tried = if errors.is_empty() {
            format!(
                "no {} (configfs-tsm) and no {} in this guest",
                self.tsm_root.display(),
                self.sev_guest_device.display()
            )
        } else {
            errors.join("; ")
        };
        Err(Error::NoTee(format!(
            "{tried}; set A3S_TEE_SIMULATE=1 for simulated evidence"
        )))
    }
}

/// Pick the provider with [`Detection::from_env`]: `A3S_TEE_SIMULATE=1` → simulated; else
/// configfs-tsm, then `/dev/sev-guest`; otherwise an error naming what was looked for (callers
/// decide whether to fall back to simulation).
pub fn detect() -> Result<Box<dyn Attester>> {
    Detection::from_env().open()
}
