#![no_main]
// Evidence bundle container + attestation JSON document.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    power_attest::fuzzing::evidence_bundle(data);
});
