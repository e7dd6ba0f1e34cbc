//! TDX verification (ATTESTATION.md §2.6): PCK chain to the pinned root with CRLs, QE report
//! signature and binding, quote signature, collateral signatures over the raw JSON, TCB status.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::prelude::X509Certificate;

use crate::error::{Error, Result};
use crate::evidence::EvidenceBundle;
use crate::policy::TdxReferenceValues;
use crate::tdx::collateral::{PckExtensions, TcbStatus, TdxCollateral, parse_pck_extensions};
use crate::tdx::quote::TdxQuote;
use crate::tdx::{INTEL_ROOT_DER, INTEL_ROOT_SHA256};
use crate::verdict::{Check, fmt_time};
use crate::x509::{
    check_crl, check_validity, common_name, extension, fingerprint, parse_cert, pem_certs,
    verify_issued_by,
};

/// A quote whose evidence checks ran.
#[derive(Debug, Clone)]
pub struct TdxEvidence {
    pub quote: TdxQuote,
    pub tcb_status: Option<TcbStatus>,
    pub advisory_ids: Vec<String>,
}

/// ECDSA P-256 / SHA-256 with a raw `x || y` key and a raw `r || s` signature (quote formats).
fn p256_raw(what: &str, key_xy: &[u8; 64], msg: &[u8], sig_rs: &[u8; 64]) -> Result<()> {
    let mut sec1 = [0u8; 65];
    sec1[0] = 4;
    sec1[1..].copy_from_slice(key_xy);
    p256_fixed(what, &sec1, msg, sig_rs)
}

/// ECDSA P-256 / SHA-256 by a certificate's key (the PCK) with a raw `r || s` signature.
fn p256_cert(what: &str, cert: &X509Certificate<'_>, msg: &[u8], sig_rs: &[u8]) -> Result<()> {
    let spki = cert.public_key();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    if spki.algorithm.algorithm.to_id_string() != crate::oids::alg::EC_PUBLIC_KEY
        || curve.as_deref() != Some(crate::oids::alg::PRIME256V1)
    {
        return Err(Error::sig(what, "key: not an EC P-256 key"));
    }
    p256_fixed(what, spki.subject_public_key.data.as_ref(), msg, sig_rs)
}

fn p256_fixed(what: &str, point: &[u8], msg: &[u8], sig_rs: &[u8]) -> Result<()> {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(msg, sig_rs)
        .map_err(|_| Error::sig(what, "ECDSA P-256 signature does not verify"))
}

fn parse_time(field: &str, s: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::collateral(field, format!("bad time {s:?}: {e}")))
}

fn hex_bytes(field: &str, s: &str, n: usize) -> Result<Vec<u8>> {
    let v = hex::decode(s).map_err(|e| Error::collateral(field, format!("hex: {e}")))?;
    if v.len() != n {
        return Err(Error::collateral(
            field,
            format!("expected {n} bytes, found {}", v.len()),
        ));
    }
    Ok(v)
}

fn status(field: &str, s: &str) -> Result<TcbStatus> {
    TcbStatus::from_name(s)
        .ok_or_else(|| Error::collateral(field, format!("unknown tcbStatus {s:?}")))
}

/// Run the evidence checks on a TDX bundle.
pub fn verify_tdx_evidence(
    bundle: &EvidenceBundle,
    now: OffsetDateTime,
    checks: &mut Vec<Check>,
) -> Option<TdxEvidence> {
    let quote = match TdxQuote::parse(&bundle.evidence) {
        Ok(q) => q,
        Err(e) => {
            checks.push(Check::fail(
                "tdx.quote",
                "TDX quote v4/v5 with certification data type 6/5",
                e.to_string(),
            ));
            return None;
        }
    };
    checks.push(Check::pass(
        "tdx.quote",
        "TDX quote v4/v5 with certification data type 6/5",
        format!(
            "v{}, {} body, {} trailing bytes",
            quote.version,
            if quote.body.mr_service_td.is_some() {
                "TD 1.5"
            } else {
                "TD 1.0"
            },
            quote.trailing_len
        ),
    ));
    let mut ev = TdxEvidence {
        quote,
        tcb_status: None,
        advisory_ids: Vec::new(),
    };
    let q = &ev.quote;

    // PCK chain.
    let ders = match pem_certs("PCK chain", &q.pck_chain_pem) {
        Ok(d) if d.len() == 3 => d,
        Ok(d) => {
            checks.push(Check::fail(
                "tdx.pckChain",
                "PCK, intermediate CA, root CA",
                format!("{} certificates", d.len()),
            ));
            return Some(ev);
        }
        Err(e) => {
            checks.push(Check::fail(
                "tdx.pckChain",
                "PCK, intermediate CA, root CA",
                e.to_string(),
            ));
            return Some(ev);
        }
    };
    let chain = (|| -> Result<(X509Certificate<'_>, X509Certificate<'_>, X509Certificate<'_>)> {
        if ders[2].as_slice() != INTEL_ROOT_DER {
            return Err(Error::cert("Intel SGX Root CA", format!("sha256 {} is not the pinned root {INTEL_ROOT_SHA256}", fingerprint(&ders[2]))));
        }
        let root = parse_cert("Intel SGX Root CA", &ders[2])?;
        let inter = parse_cert("PCK CA", &ders[1])?;
        let pck = parse_cert("PCK", &ders[0])?;
        verify_issued_by("Intel SGX Root CA", &root, &root)?;
        verify_issued_by("PCK CA", &inter, &root)?;
        verify_issued_by("PCK", &pck, &inter)?;
        Ok((pck, inter, root))
    })();
    let (pck, inter, root) = match chain {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::fail(
                "tdx.pckChain",
                "PCK <- PCK CA <- pinned Intel SGX Root CA",
                e.to_string(),
            ));
            return Some(ev);
        }
    };
    checks.push(Check::pass(
        "tdx.pckChain",
        "PCK <- PCK CA <- pinned Intel SGX Root CA",
        format!("PCK <- {} <- Intel SGX Root CA", common_name(&inter)),
    ));
    let validity: Vec<String> = [
        ("PCK", &pck),
        ("PCK CA", &inter),
        ("Intel SGX Root CA", &root),
    ]
    .iter()
    .filter_map(|(n, c)| check_validity(n, c, now).err().map(|e| e.to_string()))
    .collect();
    checks.push(Check::new(
        "tdx.validity",
        validity.is_empty(),
        format!("all certificates valid at {}", fmt_time(now)),
        if validity.is_empty() {
            "valid".into()
        } else {
            validity.join("; ")
        },
    ));

    // QE report signature by the PCK key, and the QE's binding of the attestation key.
    match p256_cert("QE report", &pck, &q.qe_report.raw, &q.qe_report_signature) {
        Ok(()) => checks.push(Check::pass(
            "tdx.qeSignature",
            "ECDSA P-256 by the PCK over the QE report",
            "valid",
        )),
        Err(e) => checks.push(Check::fail(
            "tdx.qeSignature",
            "ECDSA P-256 by the PCK over the QE report",
            e.to_string(),
        )),
    }
    let mut h = Sha256::new();
    h.update(q.attestation_key);
    h.update(&q.qe_auth_data);
    let want: [u8; 32] = h.finalize().into();
    let rd = &q.qe_report.report_data;
    checks.push(Check::new(
        "tdx.qeBinding",
        rd[..32] == want && rd[32..].iter().all(|b| *b == 0),
        format!(
            "QE REPORTDATA = SHA-256(attestation key ‖ auth data) {} ‖ zeros",
            hex::encode(want)
        ),
        hex::encode(rd),
    ));
    match p256_raw(
        "TDX quote",
        &q.attestation_key,
        q.signed_bytes(),
        &q.signature,
    ) {
        Ok(()) => checks.push(Check::pass(
            "tdx.signature",
            "ECDSA P-256 by the attestation key",
            "valid",
        )),
        Err(e) => checks.push(Check::fail(
            "tdx.signature",
            "ECDSA P-256 by the attestation key",
            e.to_string(),
        )),
    }

    let pck_ext = match extension(&pck, crate::oids::intel::SGX_EXTENSIONS)
        .ok_or_else(|| Error::cert("PCK", "no SGX extension"))
        .and_then(parse_pck_extensions)
    {
        Ok(x) => x,
        Err(e) => {
            checks.push(Check::fail(
                "tdx.pckExtensions",
                "Intel SGX extensions (TCB, PCE-ID, FMSPC)",
                e.to_string(),
            ));
            return Some(ev);
        }
    };

    // Collateral.
    let Some(coll_raw) = bundle.tdx_collateral.as_deref() else {
        checks.push(Check::fail(
            "tdx.collateral",
            "Intel PCS collateral (TCB Info, QE Identity, CRLs)",
            "missing",
        ));
        return Some(ev);
    };
    let coll = match TdxCollateral::from_json(coll_raw) {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::fail(
                "tdx.collateral",
                "Intel PCS collateral (TCB Info, QE Identity, CRLs)",
                e.to_string(),
            ));
            return Some(ev);
        }
    };
    collateral_checks(&mut ev, &coll, &pck, &inter, &root, &pck_ext, now, checks);
    Some(ev)
}

#[allow(clippy::too_many_arguments)]
fn collateral_checks(
    ev: &mut TdxEvidence,
    coll: &TdxCollateral,
    pck: &X509Certificate<'_>,
    inter: &X509Certificate<'_>,
    root: &X509Certificate<'_>,
    pck_ext: &PckExtensions,
    now: OffsetDateTime,
    checks: &mut Vec<Check>,
) {
    // TCB-signing chain and the signatures over the raw JSON.
    let signing = (|| -> Result<Vec<u8>> {
        let ders = pem_certs("TCB signing chain", coll.tcb_info_issuer_chain.as_bytes())?;
        let signer_der = ders
            .first()
            .ok_or_else(|| Error::collateral("TCB signing chain", "empty"))?;
        if ders.last().map(Vec::as_slice) != Some(INTEL_ROOT_DER) {
            return Err(Error::collateral(
                "TCB signing chain",
                "does not end in the pinned Intel SGX Root CA",
            ));
        }
        let signer = parse_cert("Intel SGX TCB Signing", signer_der)?;
        verify_issued_by("Intel SGX TCB Signing", &signer, root)?;
        Ok(signer_der.clone())
    })();
    let signer_der = match signing {
        Ok(d) => d,
        Err(e) => {
            checks.push(Check::fail(
                "tdx.collateral.chain",
                "Intel SGX TCB Signing <- pinned root",
                e.to_string(),
            ));
            return;
        }
    };
    let Ok(signer) = parse_cert("Intel SGX TCB Signing", &signer_der) else {
        return;
    };
    let v = check_validity("Intel SGX TCB Signing", &signer, now);
    checks.push(Check::new(
        "tdx.collateral.chain",
        v.is_ok(),
        format!(
            "Intel SGX TCB Signing <- pinned root, valid at {}",
            fmt_time(now)
        ),
        v.err().map_or("verified".into(), |e| e.to_string()),
    ));
    let sig_res = (|| -> Result<()> {
        for (what, text, sig) in [
            ("tcbInfo", &coll.tcb_info, &coll.tcb_info_signature),
            (
                "enclaveIdentity",
                &coll.qe_identity,
                &coll.qe_identity_signature,
            ),
        ] {
            let s = hex_bytes(what, sig, 64)?;
            p256_cert(what, &signer, text.as_bytes(), &s)?;
        }
        Ok(())
    })();
    let sig_ok = sig_res.is_ok();
    checks.push(Check::new(
        "tdx.collateral.signature",
        sig_ok,
        "TCB Info and QE Identity signed by Intel SGX TCB Signing (raw JSON)",
        sig_res.err().map_or("valid".into(), |e| e.to_string()),
    ));
    if !sig_ok {
        return;
    }

    // CRLs.
    let crl = (|| -> Result<()> {
        if coll.root_ca_crl.is_empty() || coll.pck_crl.is_empty() {
            return Err(Error::collateral(
                "CRL",
                "root CA CRL and PCK CRL are required",
            ));
        }
        let root_crl =
            hex::decode(&coll.root_ca_crl).map_err(|e| Error::collateral("root_ca_crl", e))?;
        let pck_crl = hex::decode(&coll.pck_crl).map_err(|e| Error::collateral("pck_crl", e))?;
        check_crl(
            "root CA CRL",
            &root_crl,
            root,
            &[inter.raw_serial(), signer.raw_serial()],
            now,
        )?;
        check_crl("PCK CRL", &pck_crl, inter, &[pck.raw_serial()], now)
    })();
    checks.push(Check::new(
        "tdx.collateral.crl",
        crl.is_ok(),
        "CRLs signed, current, PCK/CA/signer not revoked",
        crl.err().map_or("not revoked".into(), |e| e.to_string()),
    ));

    let (tcb_info, qe_id) = match (coll.parsed_tcb_info(), coll.parsed_qe_identity()) {
        (Ok(t), Ok(q)) => (t, q),
        (Err(e), _) | (_, Err(e)) => {
            checks.push(Check::fail(
                "tdx.collateral.identity",
                "TCB Info v3 / QE Identity v2",
                e.to_string(),
            ));
            return;
        }
    };
    let fmspc = hex::encode(pck_ext.fmspc);
    let pce = hex::encode(pck_ext.pce_id);
    let id_ok = tcb_info.id == "TDX"
        && tcb_info.version >= 3
        && tcb_info.fmspc.eq_ignore_ascii_case(&fmspc)
        && tcb_info.pce_id.eq_ignore_ascii_case(&pce)
        && qe_id.id == "TD_QE";
    checks.push(Check::new(
        "tdx.collateral.identity",
        id_ok,
        format!("TDX TCB Info v3 for FMSPC {fmspc}, PCE-ID {pce}; TD_QE identity"),
        format!(
            "{} v{} FMSPC {}, PCE-ID {}; {}",
            tcb_info.id,
            tcb_info.version,
            tcb_info.fmspc.to_lowercase(),
            tcb_info.pce_id,
            qe_id.id
        ),
    ));
    if !id_ok {
        return;
    }
    let fresh = (|| -> Result<String> {
        let mut out = Vec::new();
        for (what, a, b) in [
            ("tcbInfo", &tcb_info.issue_date, &tcb_info.next_update),
            ("enclaveIdentity", &qe_id.issue_date, &qe_id.next_update),
        ] {
            let (ia, nu) = (parse_time(what, a)?, parse_time(what, b)?);
            if now < ia || now > nu {
                return Err(Error::collateral(
                    what,
                    format!("stale: issued {a}, next update {b}"),
                ));
            }
            out.push(format!("{what} {a}..{b}"));
        }
        Ok(out.join(", "))
    })();
    checks.push(Check::new(
        "tdx.collateral.freshness",
        fresh.is_ok(),
        format!("issueDate <= {} <= nextUpdate", fmt_time(now)),
        fresh.unwrap_or_else(|e| e.to_string()),
    ));

    // QE identity.
    let qe = &ev.quote.qe_report;
    let qe_res = (|| -> Result<(TcbStatus, Vec<String>)> {
        let mrsigner = hex_bytes("mrsigner", &qe_id.mrsigner, 32)?;
        if mrsigner != qe.mr_signer || qe_id.isvprodid != qe.isv_prod_id {
            return Err(Error::collateral(
                "enclaveIdentity",
                format!(
                    "QE MRSIGNER {} / ISVPRODID {} do not match",
                    hex::encode(qe.mr_signer),
                    qe.isv_prod_id
                ),
            ));
        }
        let ms = u32::from_be_bytes(
            hex_bytes("miscselect", &qe_id.miscselect, 4)?
                .try_into()
                .unwrap_or_default(),
        );
        let mm = u32::from_be_bytes(
            hex_bytes("miscselectMask", &qe_id.miscselect_mask, 4)?
                .try_into()
                .unwrap_or_default(),
        );
        if qe.misc_select & mm != ms {
            return Err(Error::collateral(
                "enclaveIdentity",
                format!("MISCSELECT {:#x} & mask != {ms:#x}", qe.misc_select),
            ));
        }
        let at = hex_bytes("attributes", &qe_id.attributes, 16)?;
        let am = hex_bytes("attributesMask", &qe_id.attributes_mask, 16)?;
        if qe
            .attributes
            .iter()
            .zip(&am)
            .map(|(a, m)| a & m)
            .ne(at.iter().copied())
        {
            return Err(Error::collateral(
                "enclaveIdentity",
                "QE ATTRIBUTES do not match",
            ));
        }
        let lvl = qe_id
            .tcb_levels
            .iter()
            .find(|l| l.tcb.isvsvn <= qe.isv_svn)
            .ok_or_else(|| {
                Error::collateral(
                    "enclaveIdentity",
                    format!("no TCB level for QE ISVSVN {}", qe.isv_svn),
                )
            })?;
        Ok((
            status("enclaveIdentity", &lvl.tcb_status)?,
            lvl.advisory_ids.clone(),
        ))
    })();
    let qe_status = match qe_res {
        Ok((s, adv)) => {
            checks.push(Check::pass(
                "tdx.qeIdentity",
                "QE matches TD_QE identity",
                format!("{} (ISVSVN {})", s.as_str(), qe.isv_svn),
            ));
            ev.advisory_ids.extend(adv);
            s
        }
        Err(e) => {
            checks.push(Check::fail(
                "tdx.qeIdentity",
                "QE matches TD_QE identity",
                e.to_string(),
            ));
            return;
        }
    };

    // TDX module.
    let body = &ev.quote.body;
    let module_res = (|| -> Result<Option<TcbStatus>> {
        let major = body.tee_tcb_svn[1];
        let (mrsigner, attrs, mask, levels) = if major == 0 {
            let m = tcb_info
                .tdx_module
                .as_ref()
                .ok_or_else(|| Error::collateral("tcbInfo", "no tdxModule"))?;
            (&m.mrsigner, &m.attributes, &m.attributes_mask, None)
        } else {
            let id = format!("TDX_{major:02X}");
            let m = tcb_info
                .tdx_module_identities
                .iter()
                .find(|m| m.id == id)
                .ok_or_else(|| {
                    Error::collateral("tcbInfo", format!("no tdxModuleIdentities entry {id}"))
                })?;
            (
                &m.mrsigner,
                &m.attributes,
                &m.attributes_mask,
                Some(&m.tcb_levels),
            )
        };
        if hex_bytes("tdxModule.mrsigner", mrsigner, 48)? != body.mr_signer_seam {
            return Err(Error::collateral(
                "tdxModule",
                format!(
                    "MRSIGNERSEAM {} does not match",
                    hex::encode(body.mr_signer_seam)
                ),
            ));
        }
        let a = u64::from_be_bytes(
            hex_bytes("attributes", attrs, 8)?
                .try_into()
                .unwrap_or_default(),
        );
        let m = u64::from_be_bytes(
            hex_bytes("attributesMask", mask, 8)?
                .try_into()
                .unwrap_or_default(),
        );
        let seam = u64::from_be_bytes(body.seam_attributes.to_le_bytes());
        if seam & m != a {
            return Err(Error::collateral(
                "tdxModule",
                "SEAMATTRIBUTES do not match",
            ));
        }
        match levels {
            None => Ok(None),
            Some(levels) => {
                let lvl = levels
                    .iter()
                    .find(|l| l.tcb.isvsvn <= body.tee_tcb_svn[0] as u16)
                    .ok_or_else(|| {
                        Error::collateral(
                            "tdxModule",
                            format!("no module TCB level for ISVSVN {}", body.tee_tcb_svn[0]),
                        )
                    })?;
                Ok(Some(status("tdxModule", &lvl.tcb_status)?))
            }
        }
    })();
    let module_status = match module_res {
        Ok(s) => {
            checks.push(Check::pass(
                "tdx.module",
                "TDX module matches TCB Info",
                s.map_or("matches tdxModule".into(), |s| s.as_str().to_string()),
            ));
            s
        }
        Err(e) => {
            checks.push(Check::fail(
                "tdx.module",
                "TDX module matches TCB Info",
                e.to_string(),
            ));
            return;
        }
    };

    // Platform TCB level: the first level every component meets.
    let level = tcb_info.tcb_levels.iter().find(|l| {
        l.tcb.sgxtcbcomponents.len() == 16
            && l.tcb.tdxtcbcomponents.len() == 16
            && l.tcb
                .sgxtcbcomponents
                .iter()
                .zip(pck_ext.sgx_tcb_comp_svn)
                .all(|(c, v)| v >= c.svn)
            && pck_ext.pcesvn >= l.tcb.pcesvn
            && l.tcb
                .tdxtcbcomponents
                .iter()
                .zip(body.tee_tcb_svn)
                .all(|(c, v)| v >= c.svn)
    });
    match level {
        Some(l) => match status("tcbLevels", &l.tcb_status) {
            Ok(platform) => {
                ev.advisory_ids.extend(l.advisory_ids.iter().cloned());
                let worst = [Some(platform), module_status, Some(qe_status)]
                    .into_iter()
                    .flatten()
                    .max()
                    .unwrap_or(platform);
                ev.tcb_status = Some(worst);
                checks.push(Check::pass(
                    "tdx.tcbStatus",
                    "a matching TCB level",
                    format!(
                        "{} (platform {}, tcbDate {}){}",
                        worst.as_str(),
                        platform.as_str(),
                        fmt_time(parse_time("tcbDate", &l.tcb_date).unwrap_or(now)),
                        if ev.advisory_ids.is_empty() {
                            String::new()
                        } else {
                            format!(", advisories {}", ev.advisory_ids.join(","))
                        }
                    ),
                ));
            }
            Err(e) => checks.push(Check::fail(
                "tdx.tcbStatus",
                "a matching TCB level",
                e.to_string(),
            )),
        },
        None => checks.push(Check::fail(
            "tdx.tcbStatus",
            "a matching TCB level",
            format!(
                "no TCB level matches (SGX comps {:?}, PCESVN {}, TEE_TCB_SVN {})",
                pck_ext.sgx_tcb_comp_svn,
                pck_ext.pcesvn,
                hex::encode(body.tee_tcb_svn)
            ),
        )),
    }
}

/// Checks of one TDX reference-value set.
pub fn tdx_reference_checks(
    ev: &TdxEvidence,
    refs: &TdxReferenceValues,
    prefix: &str,
) -> Vec<Check> {
    let b = &ev.quote.body;
    let mut c = Vec::new();
    let mrtd = hex::encode(b.mr_td);
    c.push(Check::new(
        format!("{prefix}tdx.mrTd"),
        refs.mr_td.iter().any(|x| x.eq_ignore_ascii_case(&mrtd)),
        format!("one of [{}]", refs.mr_td.join(", ")),
        mrtd,
    ));
    if let Some(r) = &refs.rtmr {
        for (i, list) in [&r.rtmr0, &r.rtmr1, &r.rtmr2, &r.rtmr3].iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let v = hex::encode(b.rtmr[i]);
            c.push(Check::new(
                format!("{prefix}tdx.rtmr{i}"),
                list.iter().any(|x| x.eq_ignore_ascii_case(&v)),
                format!("one of [{}]", list.join(", ")),
                v,
            ));
        }
    }
    let ta = refs.td_attributes.unwrap_or_default();
    c.push(Check::new(
        format!("{prefix}tdx.tdAttributes.debug"),
        ta.debug || !b.debug(),
        if ta.debug { "allowed" } else { "DEBUG = 0" },
        format!("DEBUG = {}", b.debug() as u8),
    ));
    c.push(Check::new(
        format!("{prefix}tdx.tdAttributes.septVeDisable"),
        !ta.sept_ve_disable || b.sept_ve_disable(),
        if ta.sept_ve_disable {
            "SEPT_VE_DISABLE = 1"
        } else {
            "any"
        },
        format!("SEPT_VE_DISABLE = {}", b.sept_ve_disable() as u8),
    ));
    c.push(Check::new(
        format!("{prefix}tdx.tdAttributes.reserved"),
        b.reserved_attributes() == 0,
        "reserved TDATTRIBUTES bits = 0",
        format!("{:#018x}", b.td_attributes),
    ));
    if let Some(st) = b.mr_service_td {
        let v = hex::encode(st);
        let ok = if refs.mr_service_td.is_empty() {
            st.iter().all(|x| *x == 0)
        } else {
            refs.mr_service_td
                .iter()
                .any(|x| x.eq_ignore_ascii_case(&v))
        };
        c.push(Check::new(
            format!("{prefix}tdx.mrServiceTd"),
            ok,
            if refs.mr_service_td.is_empty() {
                "all zero".to_string()
            } else {
                format!("one of [{}]", refs.mr_service_td.join(", "))
            },
            v,
        ));
    }
    let accepted: Vec<&str> = if refs.accepted_tcb_status.is_empty() {
        vec!["UpToDate"]
    } else {
        refs.accepted_tcb_status
            .iter()
            .map(String::as_str)
            .collect()
    };
    let actual = ev.tcb_status.map(TcbStatus::as_str);
    c.push(Check::new(
        format!("{prefix}tdx.acceptedTcbStatus"),
        actual.is_some_and(|a| accepted.contains(&a)),
        format!("one of [{}]", accepted.join(", ")),
        actual.unwrap_or("not computed"),
    ));
    c
}
