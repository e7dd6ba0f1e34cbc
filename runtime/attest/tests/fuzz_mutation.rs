//! Stable-toolchain stand-in for the cargo-fuzz targets: random mutations (bit flips, byte
//! sets, truncations, splices, length-field edits) of the real corpus through the same entry
//! points as `fuzz/fuzz_targets/*`. Any panic fails the test.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use power_attest::fuzzing;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    SetU32(usize, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (
            any::<usize>(),
            prop_oneof![Just(0u32), Just(u32::MAX), Just(0x8000_0000), any::<u32>()]
        )
            .prop_map(|(i, v)| Mutation::SetU32(i, v)),
    ]
}

fn apply(mut d: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let n = d.len().max(1);
        match m {
            Mutation::Flip(i, b) if !d.is_empty() => d[i % n] ^= 1 << b,
            Mutation::Set(i, v) if !d.is_empty() => d[i % n] = *v,
            Mutation::Truncate(i) => d.truncate(i % n),
            Mutation::Insert(i, v) => {
                let at = i % (d.len() + 1);
                d.splice(at..at, v.iter().copied());
            }
            Mutation::SetU32(i, v) if d.len() >= 4 => {
                let at = i % (d.len() - 3);
                d[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => {}
        }
    }
    d
}

fn seeds_snp() -> Vec<Vec<u8>> {
    snp_samples().iter().map(|s| data(s.report)).collect()
}
fn seeds_tdx() -> Vec<Vec<u8>> {
    [
        "tdx/quote-v4.bin",
        "tdx/quote-v5.bin",
        "tdx/quote-v4-spr-extra-bytes.bin",
    ]
    .iter()
    .map(|f| data(f))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn snp_report_never_panics(seed in 0usize..8, ms in proptest::collection::vec(mutation(), 1..6)) {
        let s = seeds_snp();
        let samples = snp_samples();
        let leaf = cert(samples[seed % samples.len()].cert);
        fuzzing::snp_report(&apply(s[seed % s.len()].clone(), &ms), Some(&leaf));
    }

    #[test]
    fn tdx_quote_never_panics(seed in 0usize..3, ms in proptest::collection::vec(mutation(), 1..6)) {
        let s = seeds_tdx();
        fuzzing::tdx_quote(&apply(s[seed].clone(), &ms));
    }

    #[test]
    fn cert_extensions_never_panic(which in 0usize..3, ms in proptest::collection::vec(mutation(), 1..6)) {
        let seeds = [cert("snp/milan-v3-vcek.pem"), cert("snp/milan-v2-vcek.der"), data("tdx/intel-sgx-tcb-signing-chain.pem")];
        fuzzing::cert_extensions(&apply(seeds[which].clone(), &ms));
    }

    #[test]
    fn enc_header_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96), ms in proptest::collection::vec(mutation(), 0..4)) {
        let mut seed = b"A3SPENC1".to_vec();
        seed.extend_from_slice(&bytes);
        fuzzing::enc_header(&apply(seed, &ms));
    }

    #[test]
    fn evidence_bundle_never_panics(ms in proptest::collection::vec(mutation(), 1..6)) {
        let mut b = power_attest::EvidenceBundle::new(power_attest::TeeKind::SevSnp, data("snp/milan-v3-report.bin"));
        b.leaf_cert = Some(cert("snp/milan-v3-vcek.pem"));
        fuzzing::evidence_bundle(&apply(b.encode(), &ms));
    }
}

#[test]
fn pck_extension_parser_accepts_the_real_extension_and_rejects_truncations() {
    let q = power_attest::tdx::TdxQuote::parse(&data("tdx/quote-v4.bin")).unwrap();
    let ders = power_attest::x509::pem_certs("pck", &q.pck_chain_pem).unwrap();
    let pck = power_attest::x509::parse_cert("pck", &ders[0]).unwrap();
    let ext =
        power_attest::x509::extension(&pck, power_attest::oids::intel::SGX_EXTENSIONS).unwrap();
    let parsed = power_attest::tdx::collateral::parse_pck_extensions(ext).unwrap();
    assert_eq!(hex::encode(parsed.fmspc), "b0c06f000000");
    assert_eq!(parsed.cpusvn, parsed.sgx_tcb_comp_svn);
    for n in 0..ext.len() {
        assert!(power_attest::tdx::collateral::parse_pck_extensions(&ext[..n]).is_err());
    }
}
