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
