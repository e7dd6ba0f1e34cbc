//! Simulated evidence: the real SEV-SNP report layout, signed by a development VCEK that chains to
//! a development ARK/ASK, all derived deterministically from a public seed. The production SNP
//! verification path runs unchanged; only the trust root differs (pinned by
//! [`DEV_ARK_SHA256`]), and verifiers accept it only where the policy says `allowSimulated: true`.
//!
//! Anyone can forge this evidence: it proves nothing about hardware and exists for development,
//! CI and end-to-end tests.

use std::sync::LazyLock;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rsa::pkcs8::EncodePublicKey;
use rsa::signature::RandomizedSigner;
use sha2::{Digest, Sha256, Sha384};

use crate::TeeKind;
use crate::asn1::{
    self, TAG_BIT_STRING, TAG_GENERALIZED_TIME, TAG_IA5, TAG_OCTET_STRING, TAG_SET, TAG_UTF8, oid,
    seq, tlv, uint,
};
use crate::error::{Error, Result};
use crate::evidence::EvidenceBundle;
use crate::oids::{SIMULATED_SEED_TAG, alg, amd};
use crate::snp::report::{Product, REPORT_LEN, SIGNED_LEN, Tcb};

/// The public seed of the development chain every verifier pins.
pub const DEFAULT_SEED: &[u8] = b"a3s-power development chain (INSECURE)";
/// SHA-256 of the DER of the development ARK derived from [`DEFAULT_SEED`].
pub const DEV_ARK_SHA256: &str = "a6d9afd20efc6ee0a0648175a612128f10bd1eadbb43b4a98a17ee9b3723457e";
/// RSA modulus size of the development ARK/ASK.
pub const DEV_RSA_BITS: usize = 3072;
/// The TCB the simulated platform reports (Milan layout: bl 3, tee 0, snp 8, ucode 115).
pub const SIMULATED_TCB: Tcb = Tcb {
    fmc: None,
    bootloader: 3,
    tee: 0,
    snp: 8,
    microcode: 115,
};

fn rng(seed: &[u8], label: &str) -> ChaCha20Rng {
    let mut h = Sha256::new();
    h.update(SIMULATED_SEED_TAG);
    h.update([0]);
    h.update(label.as_bytes());
    h.update([0]);
    h.update(seed);
    ChaCha20Rng::from_seed(h.finalize().into())
}

fn name(cn: &str) -> Vec<u8> {
    let rdn = |o: &str, v: &str| tlv(TAG_SET, &seq(&[&oid(o), &tlv(TAG_UTF8, v.as_bytes())]));
    seq(&[
        &rdn("2.5.4.10", "A3S Power Simulated (INSECURE)"),
        &rdn("2.5.4.3", cn),
    ])
}

fn pss_alg() -> Vec<u8> {
    let sha384 = seq(&[&oid(alg::SHA384), &tlv(asn1::TAG_NULL, &[])]);
    let mgf = seq(&[&oid(alg::MGF1), &sha384]);
    let params = seq(&[
        &tlv(0xA0, &sha384),
        &tlv(0xA1, &mgf),
        &tlv(0xA2, &uint(&[48])),
    ]);
    seq(&[&oid(alg::RSASSA_PSS), &params])
}

fn ext(o: &str, value: &[u8]) -> Vec<u8> {
    seq(&[&oid(o), &tlv(TAG_OCTET_STRING, value)])
}

fn ca_extensions() -> Vec<Vec<u8>> {
    let critical = |o: &str, v: &[u8]| {
        seq(&[
            &oid(o),
            &tlv(asn1::TAG_BOOLEAN, &[0xFF]),
            &tlv(TAG_OCTET_STRING, v),
        ])
    };
    vec![
        // basicConstraints CA:TRUE, keyUsage keyCertSign|cRLSign, as on AMD's ARK/ASK.
        critical("2.5.29.19", &seq(&[&tlv(asn1::TAG_BOOLEAN, &[0xFF])])),
        critical("2.5.29.15", &tlv(TAG_BIT_STRING, &[0x01, 0x06])),
    ]
}

fn cert(
    issuer_key: &rsa::RsaPrivateKey,
    rng: &mut ChaCha20Rng,
    issuer: &str,
    subject: &str,
    spki: &[u8],
    extensions: &[Vec<u8>],
) -> Vec<u8> {
    let validity = seq(&[
        &tlv(0x17, b"200101000000Z"),
        &tlv(TAG_GENERALIZED_TIME, b"20991231235959Z"),
    ]);
    let mut parts: Vec<Vec<u8>> = vec![
        tlv(0xA0, &uint(&[2])),
        uint(&[0]),
        pss_alg(),
        name(issuer),
        validity,
        name(subject),
        spki.to_vec(),
    ];
    if !extensions.is_empty() {
        let exts: Vec<&[u8]> = extensions.iter().map(Vec::as_slice).collect();
        parts.push(tlv(0xA3, &seq(&exts)));
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let tbs = seq(&refs);
    let signer = rsa::pss::SigningKey::<Sha384>::new_with_salt_len(issuer_key.clone(), 48);
    let sig: Box<[u8]> = signer.sign_with_rng(rng, &tbs).into();
    let mut bits = vec![0u8];
    bits.extend_from_slice(&sig);
    seq(&[&tbs, &pss_alg(), &tlv(TAG_BIT_STRING, &bits)])
}

/// A development AMD-style authority: ARK → ASK → VCEK, plus the chip identity.
#[derive(Debug)]
pub struct SimulatedAuthority {
    pub ark_der: Vec<u8>,
    pub ask_der: Vec<u8>,
    pub vcek_der: Vec<u8>,
    pub chip_id: [u8; 64],
    vcek_key: p384::ecdsa::SigningKey,
}

static DEFAULT: LazyLock<std::result::Result<SimulatedAuthority, String>> =
    LazyLock::new(|| SimulatedAuthority::from_seed(DEFAULT_SEED).map_err(|e| e.to_string()));

impl SimulatedAuthority {
    /// The authority of [`DEFAULT_SEED`] (derived once per process; RSA key generation is slow).
    pub fn default_authority() -> Result<&'static SimulatedAuthority> {
        DEFAULT
            .as_ref()
            .map_err(|e| Error::NoTee(format!("simulated authority: {e}")))
    }

    /// Derive the whole chain from `seed`.
    pub fn from_seed(seed: &[u8]) -> Result<SimulatedAuthority> {
        let key_err = |e: rsa::Error| Error::Key {
            source_name: "simulated RSA".into(),
            reason: e.to_string(),
        };
        let ark_key =
            rsa::RsaPrivateKey::new(&mut rng(seed, "ark"), DEV_RSA_BITS).map_err(key_err)?;
        let ask_key =
            rsa::RsaPrivateKey::new(&mut rng(seed, "ask"), DEV_RSA_BITS).map_err(key_err)?;
        let mut ctr = 0u32;
        let vcek_key = loop {
            let mut h = Sha384::new();
            h.update(SIMULATED_SEED_TAG);
            h.update(b"\0vcek\0");
            h.update(seed);
            h.update(ctr.to_le_bytes());
            if let Ok(k) = p384::ecdsa::SigningKey::from_slice(&h.finalize()) {
                break k;
            }
            ctr += 1;
        };
        let mut chip_id = [0u8; 64];
        let mut h = Sha384::new();
        h.update(b"chip");
        h.update(seed);
        chip_id[..48].copy_from_slice(&h.finalize());
        let spki = |k: &rsa::RsaPrivateKey| -> Result<Vec<u8>> {
            Ok(k.to_public_key()
                .to_public_key_der()
                .map_err(|e| Error::Key {
                    source_name: "simulated RSA".into(),
                    reason: e.to_string(),
                })?
                .as_bytes()
                .to_vec())
        };
        let product = Product::Milan.name();
        let ark_cn = format!("ARK-{product}");
        let ask_cn = format!("SEV-{product}");
        let mut sign_rng = rng(seed, "pss-salt");
        let ark_der = cert(
            &ark_key,
            &mut sign_rng,
            &ark_cn,
            &ark_cn,
            &spki(&ark_key)?,
            &ca_extensions(),
        );
        let ask_der = cert(
            &ark_key,
            &mut sign_rng,
            &ark_cn,
            &ask_cn,
            &spki(&ask_key)?,
            &ca_extensions(),
        );
        let vcek_spki = p384::PublicKey::from(vcek_key.verifying_key())
            .to_public_key_der()
            .map_err(|e| Error::Key {
                source_name: "simulated VCEK".into(),
                reason: e.to_string(),
            })?;
        let t = SIMULATED_TCB;
        let int = |v: u8| uint(&[v]);
        let exts = vec![
            ext(amd::STRUCT_VERSION, &uint(&[0])),
            ext(amd::PRODUCT_NAME, &tlv(TAG_IA5, b"Milan-B0")),
            ext(amd::BL_SPL, &int(t.bootloader)),
            ext(amd::TEE_SPL, &int(t.tee)),
            ext(amd::SNP_SPL, &int(t.snp)),
            ext(amd::UCODE_SPL, &int(t.microcode)),
            ext(amd::HW_ID, &chip_id),
        ];
        let vcek_der = cert(
            &ask_key,
            &mut sign_rng,
            &ask_cn,
            "SEV-VCEK",
            vcek_spki.as_bytes(),
            &exts,
        );
        Ok(SimulatedAuthority {
            ark_der,
            ask_der,
            vcek_der,
            chip_id,
            vcek_key,
        })
    }

    /// A signed version-3 Milan-layout report with `report_data` and `measurement`.
    pub fn report(&self, report_data: &[u8; 64], measurement: &[u8; 48]) -> Vec<u8> {
        let mut r = vec![0u8; REPORT_LEN];
        let tcb = SIMULATED_TCB.encode(Product::Milan).to_le_bytes();
        r[0..4].copy_from_slice(&3u32.to_le_bytes());
        r[8..16].copy_from_slice(&0x30000u64.to_le_bytes()); // SMT allowed + reserved bit 17
        r[0x34..0x38].copy_from_slice(&1u32.to_le_bytes());
        r[0x38..0x40].copy_from_slice(&tcb);
        r[0x40..0x48].copy_from_slice(&1u64.to_le_bytes());
        r[0x50..0x90].copy_from_slice(report_data);
        r[0x90..0xC0].copy_from_slice(measurement);
        let mut h = Sha256::new();
        h.update(report_data);
        h.update(measurement);
        r[0x140..0x160].copy_from_slice(&h.finalize());
        r[0x160..0x180].fill(0xFF);
        r[0x180..0x188].copy_from_slice(&tcb);
        r[0x188] = 0x19;
        r[0x189] = 0x01;
        r[0x18A] = 0x01;
        r[0x1A0..0x1E0].copy_from_slice(&self.chip_id);
        r[0x1E0..0x1E8].copy_from_slice(&tcb);
        r[0x1E8..0x1EB].copy_from_slice(&[29, 55, 1]);
        r[0x1EC..0x1EF].copy_from_slice(&[29, 55, 1]);
        r[0x1F0..0x1F8].copy_from_slice(&tcb);
        use p384::ecdsa::signature::Signer;
        let sig: p384::ecdsa::Signature = self.vcek_key.sign(&r[..SIGNED_LEN]);
        let (rb, sb) = sig.split_bytes();
        for i in 0..48 {
            r[0x2A0 + i] = rb[47 - i];
            r[0x2E8 + i] = sb[47 - i];
        }
        r
    }

    /// A complete simulated evidence bundle.
    pub fn bundle(&self, report_data: &[u8; 64], measurement: &[u8; 48]) -> EvidenceBundle {
        let mut b = EvidenceBundle::new(TeeKind::Simulated, self.report(report_data, measurement));
        b.leaf_cert = Some(self.vcek_der.clone());
        b.intermediate_cert = Some(self.ask_der.clone());
        b.root_cert = Some(self.ark_der.clone());
        b
    }
}

/// SHA-384 of the running executable: the default simulated measurement.
pub fn executable_measurement() -> Result<[u8; 48]> {
    let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
    let mut f = std::fs::File::open(&exe).map_err(|e| Error::io(exe.display(), e))?;
    let mut h = Sha384::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(exe.display(), e))?;
    Ok(h.finalize().into())
}
