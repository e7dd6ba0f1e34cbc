#![no_main]
// Encrypted-model header parser.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    power_attest::fuzzing::enc_header(data);
});
