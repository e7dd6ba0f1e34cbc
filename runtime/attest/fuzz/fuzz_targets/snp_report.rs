#![no_main]
// SEV-SNP report parser + full evidence verification on arbitrary bytes, with a real VCEK so
// mutated reports reach the chain, signature and TCB-binding code.
const VCEK: &[u8] = include_bytes!("../../testdata/snp/milan-v2-vcek.der");
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    power_attest::fuzzing::snp_report(data, Some(VCEK));
});
