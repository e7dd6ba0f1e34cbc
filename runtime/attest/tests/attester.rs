//! Providers: the SNP certificate table parser and a configfs-tsm directory stand-in.
#![allow(clippy::unwrap_used)]

use power_attest::TeeKind;
use power_attest::attester::{
    Attester, SimulatedAttester, SnpCertTable, encode_snp_cert_table, parse_snp_cert_table,
};

#[test]
fn cert_table_round_trip_and_bounds() {
    let t = SnpCertTable {
        vcek: Some(vec![1; 10]),
        vlek: None,
        ask: Some(vec![2; 5]),
        ark: Some(vec![3; 7]),
    };
    let blob = encode_snp_cert_table(&t);
    assert_eq!(parse_snp_cert_table(&blob).unwrap(), t);
    // Every truncation is an error, never a panic.
    for n in 0..blob.len() {
        let _ = parse_snp_cert_table(&blob[..n]);
    }
    assert!(parse_snp_cert_table(&blob[..30]).is_err());
    let mut bad = blob.clone();
    bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(
        parse_snp_cert_table(&bad)
            .unwrap_err()
            .to_string()
            .contains("outside")
    );
    let mut dup = blob.clone();
    dup.copy_within(0..16, 24);
    assert!(parse_snp_cert_table(&dup).is_err());
}

#[test]
fn simulated_attester_binds_report_data() {
    let a = SimulatedAttester::new().unwrap();
    assert_eq!(a.kind(), TeeKind::Simulated);
    let b = a.attest(&[5; 64]).unwrap();
    let r = power_attest::snp::SnpReport::parse(&b.evidence).unwrap();
    assert_eq!(r.report_data, [5; 64]);
    // Default measurement: SHA-384 of this test executable.
    assert_eq!(
        r.measurement,
        power_attest::simulated::executable_measurement().unwrap()
    );
}

#[test]
fn detect_honours_the_override_or_fails_loudly() {
    // Reads A3S_TEE_SIMULATE as set by whoever runs the tests; nothing here changes it.
    let r = power_attest::attester::detect();
    if std::path::Path::new(power_attest::attester::TSM_ROOT).is_dir() {
        assert!(r.is_ok());
    } else if std::env::var("A3S_TEE_SIMULATE").as_deref() != Ok("1") {
        let e = r.unwrap_err().to_string();
        assert!(e.contains("A3S_TEE_SIMULATE"), "{e}");
    }
}

mod detection {
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use power_attest::TeeKind;
    use power_attest::attester::{
        Attester, Detection, Provider, SEV_GUEST_DEVICE, SevGuestAttester, SevGuestDevice,
        SnpCertTable, snp_bundle_from_device,
    };
    use power_attest::simulated::SimulatedAuthority;

    /// An empty directory, removed when the returned guard drops.
    fn scratch(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("a3s-detect-{name}-"))
            .tempdir()
            .unwrap()
    }

    /// Stands in for /dev/sev-guest: reports in the real layout, plus a host certificate table.
    #[derive(Debug, Default)]
    struct FakeDevice {
        calls: AtomicUsize,
        vlek: bool,
        wrong_report_data: bool,
    }

    impl SevGuestDevice for FakeDevice {
        fn extended_report(
            &self,
            report_data: &[u8; 64],
            vmpl: u32,
        ) -> power_attest::Result<(Vec<u8>, SnpCertTable)> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            assert_eq!(vmpl, 2);
            let auth = SimulatedAuthority::default_authority()?;
            let mut rd = *report_data;
            if self.wrong_report_data {
                rd[0] ^= 1;
            }
            let b = auth.bundle(&rd, &[0x11; 48]);
            let mut report = b.evidence;
            let mut t = SnpCertTable {
                vcek: b.leaf_cert.clone(),
                vlek: Some(vec![0x76; 4]),
                ask: b.intermediate_cert,
                ark: b.root_cert,
            };
            if self.vlek {
                // SIGNING_KEY (bits 4:2 of 0x48) = 1: the leaf must be the VLEK entry.
                report[0x48] = (report[0x48] & !0b11100) | (1 << 2);
                t.vcek = None;
            }
            Ok((report, t))
        }
    }

    #[test]
    fn candidates_follow_the_order_and_the_config() {
        let tmp = scratch("cand");
        let d = tmp.path();
        let tsm = d.join("tsm");
        let dev = d.join("sev-guest");
        let mut det = Detection {
            tsm_root: tsm.clone(),
            sev_guest_device: dev.clone(),
            ..Default::default()
        };
        assert_eq!(det.candidates(), vec![]);
        std::fs::write(&dev, b"").unwrap();
        assert_eq!(det.candidates(), vec![Provider::SevGuest(dev.clone())]);
        std::fs::create_dir(&tsm).unwrap();
        det.allow_simulated = true;
        assert_eq!(
            det.candidates(),
            vec![
                Provider::ConfigfsTsm(tsm.clone()),
                Provider::SevGuest(dev.clone()),
                Provider::Simulated
            ]
        );
        det.force_simulated = true;
        assert_eq!(det.candidates(), vec![Provider::Simulated]);
        assert_eq!(
            Detection::default().sev_guest_device,
            Path::new(SEV_GUEST_DEVICE)
        );
    }

    #[test]
    fn falls_through_a_broken_tsm_to_the_sev_guest_device() {
        let tmp = scratch("open");
        let d = tmp.path();
        let tsm = d.join("tsm");
        std::fs::create_dir(&tsm).unwrap(); // a directory with no configfs provider behind it
        let dev = d.join("sev-guest");
        std::fs::write(&dev, b"").unwrap();
        let det = Detection {
            tsm_root: tsm,
            sev_guest_device: dev.clone(),
            ..Default::default()
        };
        let opened = std::sync::Mutex::new(None);
        let a = det
            .open_with(|p| {
                *opened.lock().unwrap() = Some(p.to_path_buf());
                Ok(Box::new(
                    SevGuestAttester::with_device(Box::<FakeDevice>::default()).at_vmpl(2),
                ))
            })
            .unwrap();
        assert_eq!(opened.lock().unwrap().as_deref(), Some(dev.as_path()));
        assert_eq!(a.kind(), TeeKind::SevSnp);
        let b = a.attest(&[0x5A; 64]).unwrap();
        assert_eq!(b.kind, TeeKind::SevSnp);
        let r = power_attest::snp::SnpReport::parse(&b.evidence).unwrap();
        assert_eq!(r.report_data, [0x5A; 64]);
        assert_eq!(r.measurement, [0x11; 48]);
        let auth = SimulatedAuthority::default_authority().unwrap();
        let want = auth.bundle(&[0x5A; 64], &[0x11; 48]);
        assert_eq!(b.leaf_cert, want.leaf_cert);
        assert_eq!(b.intermediate_cert, want.intermediate_cert);
        assert_eq!(b.root_cert, want.root_cert);

        // With the real opener, the fake path is refused with a clear error, and the broken
        // configfs-tsm error is reported too.
        let e = det.open().unwrap_err().to_string();
        assert!(e.contains("opens /dev/sev-guest only"), "{e}");
        assert!(e.contains("A3S_TEE_SIMULATE"), "{e}");
        // allow_simulated: the fallback after both failed.
        let sim = Detection {
            allow_simulated: true,
            ..det.clone()
        };
        assert_eq!(sim.open().unwrap().kind(), TeeKind::Simulated);
    }

    #[test]
    fn nothing_found_names_every_path() {
        let tmp = scratch("none");
        let d = tmp.path();
        let det = Detection {
            tsm_root: d.join("no-tsm"),
            sev_guest_device: d.join("no-dev"),
            ..Default::default()
        };
        let e = det.open().unwrap_err().to_string();
        assert!(
            e.contains("no-tsm") && e.contains("no-dev") && e.contains("A3S_TEE_SIMULATE"),
            "{e}"
        );
        let forced = Detection {
            force_simulated: true,
            ..det
        };
        assert_eq!(forced.open().unwrap().kind(), TeeKind::Simulated);
    }

    #[test]
    fn real_device_absent_is_a_clear_error() {
        if Path::new(SEV_GUEST_DEVICE).exists() {
            return; // a real SNP guest: nothing to assert about absence
        }
        let e = SevGuestAttester::open(Path::new(SEV_GUEST_DEVICE))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/dev/sev-guest does not exist"), "{e}");
        assert!(e.starts_with("no TEE available"), "{e}");
    }

    #[test]
    fn device_output_maps_to_the_bundle() {
        let dev = FakeDevice::default();
        let (report, certs) = dev.extended_report(&[1; 64], 2).unwrap();
        // The requested report_data must come back.
        let e = snp_bundle_from_device(report.clone(), certs.clone(), &[2; 64]).unwrap_err();
        assert!(e.to_string().contains("REPORT_DATA"), "{e}");
        // Truncated output from the device is an error, not a panic.
        for n in [0, 10, 0x2A0, 0x49F] {
            assert!(snp_bundle_from_device(report[..n].to_vec(), certs.clone(), &[1; 64]).is_err());
        }
        // A VLEK-signed report takes the VLEK entry as its leaf.
        let vlek = FakeDevice {
            vlek: true,
            ..Default::default()
        };
        let a = SevGuestAttester::with_device(Box::new(vlek)).at_vmpl(2);
        let b = a.attest(&[3; 64]).unwrap();
        assert_eq!(b.leaf_cert, Some(vec![0x76; 4]));
        // No certificates from the host: a bare report (the verifier goes to KDS).
        let b = snp_bundle_from_device(report, SnpCertTable::default(), &[1; 64]).unwrap();
        assert!(b.leaf_cert.is_none() && b.intermediate_cert.is_none() && b.root_cert.is_none());
        // A device returning evidence for other report_data fails the attestation.
        let bad = SevGuestAttester::with_device(Box::new(FakeDevice {
            wrong_report_data: true,
            ..Default::default()
        }))
        .at_vmpl(2);
        assert!(bad.attest(&[4; 64]).is_err());
    }
}
