#![no_main]
// AMD VCEK extensions, Intel PCK SGX extension, RA-TLS certificate and SNP cert table parsers.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    power_attest::fuzzing::cert_extensions(data);
});
