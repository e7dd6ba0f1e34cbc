#![no_main]
// TDX quote parser + evidence verification on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    power_attest::fuzzing::tdx_quote(data);
});
