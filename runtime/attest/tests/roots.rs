//! The compiled-in trust anchors are present and match their pinned SHA-256 (an empty slot means
//! the pin did not match and every verification under that product would fail).
#![allow(clippy::unwrap_used)]

use power_attest::snp::Product;
use power_attest::snp::amd::{ARK_SHA256, ASK_SHA256, ASVK_SHA256, pinned_roots};
use power_attest::x509::fingerprint;

#[test]
fn amd_and_intel_roots_match_their_pins() {
    for p in [Product::Milan, Product::Genoa, Product::Turin] {
        let r = pinned_roots(p);
        let pin = |t: &[(Product, &'static str); 3]| t.iter().find(|(q, _)| *q == p).unwrap().1;
        assert_eq!(fingerprint(&r.ark), pin(&ARK_SHA256), "{p:?} ARK");
        assert_eq!(fingerprint(&r.ask), pin(&ASK_SHA256), "{p:?} ASK");
        assert_eq!(fingerprint(&r.asvk), pin(&ASVK_SHA256), "{p:?} ASVK");
    }
    assert_eq!(
        fingerprint(power_attest::tdx::INTEL_ROOT_DER),
        power_attest::tdx::INTEL_ROOT_SHA256
    );
}
