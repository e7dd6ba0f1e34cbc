//! AMD trust anchors (ARK/ASK/ASVK for Milan, Genoa and Turin, compiled in and pinned by their
//! SHA-256) and the VCEK/VLEK extensions that bind a certificate to a chip and a TCB.

use std::sync::LazyLock;

use x509_parser::prelude::X509Certificate;

use crate::asn1;
use crate::error::{Error, Result};
use crate::oids::amd as oid;
use crate::snp::report::Product;
use crate::x509::{fingerprint, pem_certs};

/// SHA-256 of the DER of each pinned certificate (cross-checked in three public repositories,
/// see testdata/PROVENANCE.md).
pub const ARK_SHA256: [(Product, &str); 3] = [
    (
        Product::Milan,
        "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    ),
    (
        Product::Genoa,
        "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    ),
    (
        Product::Turin,
        "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
    ),
];
pub const ASK_SHA256: [(Product, &str); 3] = [
    (
        Product::Milan,
        "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
    ),
    (
        Product::Genoa,
        "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
    ),
    (
        Product::Turin,
        "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
    ),
];
pub const ASVK_SHA256: [(Product, &str); 3] = [
    (
        Product::Milan,
        "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
    ),
    (
        Product::Genoa,
        "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
    ),
    (
        Product::Turin,
        "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
    ),
];

/// One product's anchors, as DER.
#[derive(Debug, Clone, Default)]
pub struct AmdRoots {
    pub ark: Vec<u8>,
    pub ask: Vec<u8>,
    pub asvk: Vec<u8>,
}

fn load(ask_ark: &str, asvk_ark: &str, product: Product) -> AmdRoots {
    // Compiled-in PEM; a pin mismatch leaves the slot empty so verification fails loudly.
    let pin = |der: Vec<u8>, table: &[(Product, &str); 3]| -> Vec<u8> {
        let want = table.iter().find(|(p, _)| *p == product).map(|(_, h)| *h);
        if Some(fingerprint(&der).as_str()) == want {
            der
        } else {
            Vec::new()
        }
    };
    let a = pem_certs("built-in ASK/ARK", ask_ark.as_bytes()).unwrap_or_default();
    let v = pem_certs("built-in ASVK/ARK", asvk_ark.as_bytes()).unwrap_or_default();
    AmdRoots {
        ark: pin(a.get(1).cloned().unwrap_or_default(), &ARK_SHA256),
        ask: pin(a.first().cloned().unwrap_or_default(), &ASK_SHA256),
        asvk: pin(v.first().cloned().unwrap_or_default(), &ASVK_SHA256),
    }
}

static MILAN: LazyLock<AmdRoots> = LazyLock::new(|| {
    load(
        include_str!("../../roots/milan-ask-ark.pem"),
        include_str!("../../roots/milan-asvk-ark.pem"),
        Product::Milan,
    )
});
static GENOA: LazyLock<AmdRoots> = LazyLock::new(|| {
    load(
        include_str!("../../roots/genoa-ask-ark.pem"),
        include_str!("../../roots/genoa-asvk-ark.pem"),
        Product::Genoa,
    )
});
static TURIN: LazyLock<AmdRoots> = LazyLock::new(|| {
    load(
        include_str!("../../roots/turin-ask-ark.pem"),
        include_str!("../../roots/turin-asvk-ark.pem"),
        Product::Turin,
    )
});

/// The pinned anchors of `product`.
pub fn pinned_roots(product: Product) -> &'static AmdRoots {
    match product {
        Product::Milan => &MILAN,
        Product::Genoa => &GENOA,
        Product::Turin => &TURIN,
    }
}

/// The AMD extensions of a VCEK or VLEK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AmdCertExtensions {
    pub struct_version: Option<u32>,
    pub product_name: Option<String>,
    pub bl_spl: Option<u8>,
    pub tee_spl: Option<u8>,
    pub snp_spl: Option<u8>,
    pub ucode_spl: Option<u8>,
    pub fmc_spl: Option<u8>,
    pub hw_id: Option<Vec<u8>>,
    pub csp_id: Option<String>,
}

const WHAT: &str = "AMD certificate extension";

fn spl(value: &[u8], name: &'static str) -> Result<u8> {
    let c = asn1::expect_single(WHAT, asn1::TAG_INTEGER, value)?;
    let v = asn1::uint_content(WHAT, c)?;
    u8::try_from(v).map_err(|_| Error::malformed(WHAT, 0, format!("{name} = {v} exceeds 255")))
}

fn ia5(value: &[u8]) -> Result<String> {
    let c = asn1::expect_single(WHAT, asn1::TAG_IA5, value)?;
    if !c.iter().all(|b| b.is_ascii() && !b.is_ascii_control()) {
        return Err(Error::malformed(
            WHAT,
            2,
            "IA5String has non-printable bytes",
        ));
    }
    Ok(String::from_utf8_lossy(c).into_owned())
}

/// Parse the raw extnValue contents of the AMD extensions (separated from x509-parser so the
/// fuzz target can drive it with arbitrary bytes).
pub fn parse_amd_extension_values<'a>(
    values: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<AmdCertExtensions> {
    let mut e = AmdCertExtensions::default();
    for (o, v) in values {
        match o {
            oid::STRUCT_VERSION => {
                let c = asn1::expect_single(WHAT, asn1::TAG_INTEGER, v)?;
                e.struct_version = Some(asn1::uint_content(WHAT, c)?);
            }
            oid::PRODUCT_NAME => e.product_name = Some(ia5(v)?),
            oid::BL_SPL => e.bl_spl = Some(spl(v, "blSPL")?),
            oid::TEE_SPL => e.tee_spl = Some(spl(v, "teeSPL")?),
            oid::SNP_SPL => e.snp_spl = Some(spl(v, "snpSPL")?),
            oid::UCODE_SPL => e.ucode_spl = Some(spl(v, "ucodeSPL")?),
            oid::FMC_SPL => e.fmc_spl = Some(spl(v, "fmcSPL")?),
            // Raw bytes, not a nested OCTET STRING (ATTESTATION.md §5.3).
            oid::HW_ID => {
                if v.len() != 64 && v.len() != 8 {
                    return Err(Error::malformed(
                        WHAT,
                        0,
                        format!("hwID must be 64 or 8 bytes, found {}", v.len()),
                    ));
                }
                e.hw_id = Some(v.to_vec());
            }
            oid::CSP_ID => e.csp_id = Some(ia5(v)?),
            _ => {}
        }
    }
    Ok(e)
}

/// The AMD extensions of `cert`.
pub fn amd_extensions(cert: &X509Certificate<'_>) -> Result<AmdCertExtensions> {
    let ids: Vec<(String, &[u8])> = cert
        .extensions()
        .iter()
        .map(|x| (x.oid.to_id_string(), x.value))
        .collect();
    parse_amd_extension_values(ids.iter().map(|(o, v)| (o.as_str(), *v)))
}
