//! SEV-SNP verification (ATTESTATION.md §1.6): parse, chain to the pinned ARK, report signature,
//! certificate-to-report binding, then the reference-value checks of a policy set.

use time::OffsetDateTime;

use crate::evidence::EvidenceBundle;
use crate::policy::SnpReferenceValues;
use crate::snp::amd::{amd_extensions, pinned_roots};
use crate::snp::report::{Product, SigningKey, SnpReport, Tcb};
use crate::verdict::Check;
use crate::x509::{check_validity, common_name, fingerprint, parse_cert, verify_issued_by};

/// Which anchors the chain must end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnpTrust {
    /// AMD's ARKs compiled into this crate.
    Amd,
    /// The development ARK derived from the public simulation seed.
    Simulated,
}

/// A report whose evidence checks ran (they may have failed; see the checks).
#[derive(Debug, Clone)]
pub struct SnpEvidence {
    pub report: SnpReport,
    pub product: Option<Product>,
}

fn push_err(checks: &mut Vec<Check>, name: &str, expected: &str, e: impl std::fmt::Display) {
    checks.push(Check::fail(name, expected, e.to_string()));
}

/// Run the evidence checks (everything that does not depend on policy values).
pub fn verify_snp_evidence(
    bundle: &EvidenceBundle,
    trust: SnpTrust,
    now: OffsetDateTime,
    checks: &mut Vec<Check>,
) -> Option<SnpEvidence> {
    let report = match SnpReport::parse(&bundle.evidence) {
        Ok(r) => r,
        Err(e) => {
            push_err(
                checks,
                "snp.report",
                "1184-byte report, version 2, 3 or 5",
                e,
            );
            return None;
        }
    };
    let signer = match report.signing_key {
        SigningKey::Vcek => "VCEK",
        SigningKey::Vlek => "VLEK",
    };
    checks.push(Check::pass(
        "snp.report",
        "1184-byte report, version 2, 3 or 5",
        format!("version {}, signed by {signer}", report.version),
    ));
    let mut out = SnpEvidence {
        report,
        product: None,
    };
    let report = &out.report;

    let Some(leaf_der) = bundle.leaf_cert.as_deref() else {
        checks.push(Check::fail(
            "snp.certificates",
            format!("{signer} certificate in the bundle or from AMD KDS"),
            "missing",
        ));
        return Some(out);
    };
    let leaf = match parse_cert(signer, leaf_der) {
        Ok(c) => c,
        Err(e) => {
            push_err(checks, "snp.certificates", "parsable X.509 certificate", e);
            return Some(out);
        }
    };
    let ext = match amd_extensions(&leaf) {
        Ok(e) => e,
        Err(e) => {
            push_err(checks, "snp.certificates", "well-formed AMD extensions", e);
            return Some(out);
        }
    };
    let leaf_cn = common_name(&leaf);
    let want_cn = format!("SEV-{signer}");
    checks.push(Check::new(
        "snp.certificates",
        leaf_cn == want_cn,
        format!("leaf CN {want_cn}"),
        format!("leaf CN {leaf_cn}"),
    ));

    // Product: CPUID (v≥3) and the certificate's productName must agree.
    let cert_product = ext
        .product_name
        .as_deref()
        .and_then(Product::from_product_name);
    let product = match (report.cpuid_product(), cert_product) {
        (Some(a), Some(b)) if a != b => {
            checks.push(Check::fail(
                "snp.product",
                format!("{} (CPUID)", a.name()),
                format!("certificate productName {:?}", ext.product_name),
            ));
            return Some(out);
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => {
            checks.push(Check::fail(
                "snp.product",
                "Milan, Genoa or Turin",
                format!(
                    "CPUID {:?}, productName {:?}",
                    report.cpuid, ext.product_name
                ),
            ));
            return Some(out);
        }
    };
    checks.push(Check::pass(
        "snp.product",
        "Milan, Genoa or Turin",
        product.name(),
    ));
    out.product = Some(product);
    let report = &out.report;

    // Anchors.
    let (ark_der, inter_der): (&[u8], Option<&[u8]>) = match trust {
        SnpTrust::Amd => {
            let roots = pinned_roots(product);
            if let Some(given) = bundle.root_cert.as_deref()
                && given != roots.ark.as_slice()
            {
                checks.push(Check::fail(
                    "snp.ark",
                    format!(
                        "pinned ARK-{} sha256 {}",
                        product.name(),
                        fingerprint(&roots.ark)
                    ),
                    format!("sha256 {}", fingerprint(given)),
                ));
                return Some(out);
            }
            let builtin = match report.signing_key {
                SigningKey::Vcek => roots.ask.as_slice(),
                SigningKey::Vlek => roots.asvk.as_slice(),
            };
            (
                roots.ark.as_slice(),
                Some(bundle.intermediate_cert.as_deref().unwrap_or(builtin)),
            )
        }
        SnpTrust::Simulated => {
            let ark = bundle.root_cert.as_deref().unwrap_or(&[]);
            let want = crate::simulated::DEV_ARK_SHA256;
            if fingerprint(ark) != want {
                checks.push(Check::fail(
                    "snp.ark",
                    format!("development ARK sha256 {want}"),
                    format!("sha256 {}", fingerprint(ark)),
                ));
                return Some(out);
            }
            (ark, bundle.intermediate_cert.as_deref())
        }
    };
    checks.push(Check::pass(
        "snp.ark",
        format!("pinned ARK-{}", product.name()),
        format!("sha256 {}", fingerprint(ark_der)),
    ));
    let inter_name = match report.signing_key {
        SigningKey::Vcek => format!("SEV-{}", product.name()),
        SigningKey::Vlek => format!("SEV-VLEK-{}", product.name()),
    };
    let chain_desc = format!(
        "{signer} <- {inter_name} <- ARK-{} (RSA-PSS SHA-384)",
        product.name()
    );
    let chain = (|| -> crate::Result<String> {
        let ark = parse_cert("ARK", ark_der)?;
        let inter_der = inter_der.filter(|d| !d.is_empty()).ok_or_else(|| {
            crate::Error::cert(inter_name.clone(), "missing intermediate certificate")
        })?;
        let inter = parse_cert(&inter_name, inter_der)?;
        let cn = common_name(&inter);
        if cn != inter_name {
            return Err(crate::Error::cert(
                inter_name.clone(),
                format!("intermediate CN is {cn:?}"),
            ));
        }
        verify_issued_by("ARK", &ark, &ark)?;
        verify_issued_by(&inter_name, &inter, &ark)?;
        verify_issued_by(signer, &leaf, &inter)?;
        let mut validity = Vec::new();
        for (n, c) in [
            ("ARK", &ark),
            (inter_name.as_str(), &inter),
            (signer, &leaf),
        ] {
            if let Err(e) = check_validity(n, c, now) {
                validity.push(e.to_string());
            }
        }
        Ok(validity.join("; "))
    })();
    match chain {
        Ok(validity) => {
            checks.push(Check::pass("snp.chain", chain_desc, "verified"));
            checks.push(Check::new(
                "snp.validity",
                validity.is_empty(),
                format!(
                    "all certificates valid at {}",
                    crate::verdict::fmt_time(now)
                ),
                if validity.is_empty() {
                    "valid".to_string()
                } else {
                    validity
                },
            ));
        }
        Err(e) => {
            push_err(checks, "snp.chain", &chain_desc, e);
            return Some(out);
        }
    }

    // Report signature: ECDSA P-384 / SHA-384 over report[0..0x2A0].
    let sig_check = (|| -> crate::Result<()> {
        let spki = leaf.public_key();
        let (key_alg, curve) = (
            spki.algorithm.algorithm.to_id_string(),
            spki.algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string()),
        );
        if key_alg != crate::oids::alg::EC_PUBLIC_KEY
            || curve.as_deref() != Some(crate::oids::alg::SECP384R1)
        {
            return Err(crate::Error::sig(
                "SNP report",
                format!("{signer} key is not an EC P-384 key ({key_alg}, curve {curve:?})"),
            ));
        }
        // r || s, big-endian (the report stores them little-endian; `SnpReport::parse`
        // converted them). ring's P-384 is ~1.6x faster than RustCrypto's p384 here.
        let mut fixed = [0u8; 96];
        fixed[..48].copy_from_slice(&report.signature_r);
        fixed[48..].copy_from_slice(&report.signature_s);
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P384_SHA384_FIXED,
            spki.subject_public_key.data.as_ref(),
        )
        .verify(report.signed_bytes(), &fixed)
        .map_err(|_| {
            crate::Error::sig(
                "SNP report",
                format!("ECDSA P-384 signature does not verify under the {signer} key"),
            )
        })
    })();
    match sig_check {
        Ok(()) => checks.push(Check::pass(
            "snp.signature",
            format!("ECDSA P-384 by the {signer}"),
            "valid",
        )),
        Err(e) => push_err(
            checks,
            "snp.signature",
            &format!("ECDSA P-384 by the {signer}"),
            e,
        ),
    }

    // Certificate TCB == REPORTED_TCB (never CURRENT_TCB).
    let tcb = Tcb::decode(report.reported_tcb, product);
    let cert_tcb = Tcb {
        fmc: ext.fmc_spl,
        bootloader: ext.bl_spl.unwrap_or(u8::MAX),
        tee: ext.tee_spl.unwrap_or(u8::MAX),
        snp: ext.snp_spl.unwrap_or(u8::MAX),
        microcode: ext.ucode_spl.unwrap_or(u8::MAX),
    };
    let spl_present = ext.bl_spl.is_some()
        && ext.tee_spl.is_some()
        && ext.snp_spl.is_some()
        && ext.ucode_spl.is_some()
        && (product != Product::Turin || ext.fmc_spl.is_some());
    checks.push(Check::new(
        "snp.reportedTcb",
        spl_present && tcb == cert_tcb,
        format!("REPORTED_TCB {tcb}"),
        format!("{signer} SPLs {cert_tcb}"),
    ));

    // hwID == CHIP_ID (VCEK only).
    match report.signing_key {
        SigningKey::Vcek => {
            let chip = &report.chip_id;
            let (ok, want) = match (product, ext.hw_id.as_deref()) {
                (Product::Turin, Some(h)) if h.len() == 8 => (
                    h == &chip[..8] && chip[8..].iter().all(|b| *b == 0),
                    hex::encode(&chip[..8]),
                ),
                (_, Some(h)) => (h == chip.as_slice(), hex::encode(chip)),
                (_, None) => (false, hex::encode(chip)),
            };
            checks.push(Check::new(
                "snp.chipId",
                ok,
                format!("VCEK hwID = CHIP_ID {want}"),
                ext.hw_id
                    .as_deref()
                    .map_or("no hwID extension".into(), hex::encode),
            ));
        }
        SigningKey::Vlek => checks.push(Check::not_checked(
            "snp.chipId",
            "VLEK certificates carry no hwID",
        )),
    }
    Some(out)
}

fn tcb_ge(a: &Tcb, min: &crate::policy::MinimumTcb) -> bool {
    a.bootloader >= min.bootloader
        && a.tee >= min.tee
        && a.snp >= min.snp
        && a.microcode >= min.microcode
        && min.fmc.is_none_or(|f| a.fmc.unwrap_or(0) >= f)
}

/// The checks of one reference-value set against a report (names prefixed by `prefix`).
pub fn snp_reference_checks(
    ev: &SnpEvidence,
    refs: &SnpReferenceValues,
    prefix: &str,
) -> Vec<Check> {
    let r = &ev.report;
    let mut c = Vec::new();
    let m = hex::encode(r.measurement);
    c.push(Check::new(
        format!("{prefix}snp.measurement"),
        refs.measurements.iter().any(|x| x.eq_ignore_ascii_case(&m)),
        format!("one of [{}]", refs.measurements.join(", ")),
        m,
    ));
    let want_vmpl = refs.vmpl.unwrap_or(0);
    c.push(Check::new(
        format!("{prefix}snp.vmpl"),
        r.vmpl == want_vmpl,
        want_vmpl.to_string(),
        r.vmpl.to_string(),
    ));
    let gp = refs.guest_policy.unwrap_or_default();
    c.push(Check::new(
        format!("{prefix}snp.guestPolicy.debug"),
        gp.debug || !r.policy.debug(),
        if gp.debug { "allowed" } else { "DEBUG = 0" },
        format!("DEBUG = {}", r.policy.debug() as u8),
    ));
    c.push(Check::new(
        format!("{prefix}snp.guestPolicy.migrateMA"),
        gp.migrate_ma || !r.policy.migrate_ma(),
        if gp.migrate_ma {
            "allowed"
        } else {
            "MIGRATE_MA = 0"
        },
        format!("MIGRATE_MA = {}", r.policy.migrate_ma() as u8),
    ));
    match (&refs.minimum_tcb, ev.product) {
        (Some(min), Some(p)) => {
            for (name, raw) in [("committed", r.committed_tcb), ("launch", r.launch_tcb)] {
                let t = Tcb::decode(raw, p);
                c.push(Check::new(
                    format!("{prefix}snp.minimumTcb.{name}"),
                    tcb_ge(&t, min),
                    format!(
                        ">= {}bl={} tee={} snp={} ucode={}",
                        min.fmc.map(|f| format!("fmc={f} ")).unwrap_or_default(),
                        min.bootloader,
                        min.tee,
                        min.snp,
                        min.microcode
                    ),
                    t.to_string(),
                ));
            }
        }
        (Some(_), None) => c.push(Check::fail(
            format!("{prefix}snp.minimumTcb"),
            "known product",
            "product unknown",
        )),
        (None, _) => c.push(Check::not_checked(
            format!("{prefix}snp.minimumTcb"),
            "no minimumTCB in this set",
        )),
    }
    if !refs.chip_ids.is_empty() {
        let chip = hex::encode(r.chip_id);
        c.push(Check::new(
            format!("{prefix}snp.chipIDs"),
            refs.chip_ids.iter().any(|x| x.eq_ignore_ascii_case(&chip)),
            format!("one of {} allowed chips", refs.chip_ids.len()),
            chip,
        ));
    }
    c
}
