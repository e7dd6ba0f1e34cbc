//! RA-TLS (DESIGN §3.3): a short-lived self-signed ECDSA P-256 certificate carrying the evidence
//! bundle in the non-critical extension `1.3.6.1.4.1.56560.1.1`, whose report_data binds nonce =
//! 32 zero bytes and the certificate's own SPKI; and a rustls [`RaTlsVerifier`] that verifies it
//! against a policy during the handshake.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use time::OffsetDateTime;

use crate::attester::Attester;
use crate::error::{Error, Result};
use crate::evidence::EvidenceBundle;
use crate::kds::KdsClient;
use crate::oids::{RA_TLS_EVIDENCE, RA_TLS_EVIDENCE_ARCS};
use crate::policy::Policy;
use crate::report_data::{ReportData, spki_sha256};
use crate::verdict::Verdict;
use crate::verify::{Expectations, verify, verify_with_kds};
use crate::x509::parse_cert;

/// A freshly issued RA-TLS certificate and its private key.
#[derive(Clone)]
pub struct RaTlsCertificate {
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER of the P-256 key.
    pub key_der: zeroize::Zeroizing<Vec<u8>>,
    pub spki_sha256: [u8; 32],
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for RaTlsCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaTlsCertificate")
            .field("spki_sha256", &hex::encode(self.spki_sha256))
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl RaTlsCertificate {
    /// rustls server identity.
    pub fn certified_key(
        &self,
    ) -> Result<(
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )> {
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(self.key_der.to_vec());
        Ok((
            vec![CertificateDer::from(self.cert_der.clone())],
            key.into(),
        ))
    }
    /// Time to rotate: a quarter of the lifetime before expiry.
    pub fn needs_rotation(&self, now: OffsetDateTime, lifetime: Duration) -> bool {
        now + lifetime / 4 >= self.not_after
    }
}

/// Issue a certificate valid from `now - 1 min` for `lifetime`, embedding fresh evidence.
pub fn issue(
    attester: &dyn Attester,
    model_sha256: [u8; 32],
    lifetime: Duration,
    now: OffsetDateTime,
) -> Result<RaTlsCertificate> {
    let err = |e: rcgen::Error| Error::RaTls(e.to_string());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let spki_hash = spki_sha256(&key.public_key_der());
    let rd = ReportData {
        nonce: [0; 32],
        tls_spki_sha256: spki_hash,
        model_sha256,
    };
    let bundle = attester.attest(&rd.to_bytes())?;
    let mut params = rcgen::CertificateParams::new(vec!["a3s-power".to_string()]).map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "a3s-power RA-TLS");
    params.not_before = now - time::Duration::minutes(1);
    let not_after = now + lifetime;
    params.not_after = not_after;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            RA_TLS_EVIDENCE_ARCS,
            bundle.encode(),
        ));
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(RaTlsCertificate {
        cert_der: cert.der().to_vec(),
        key_der: zeroize::Zeroizing::new(key.serialize_der()),
        spki_sha256: spki_hash,
        not_after,
    })
}

/// The evidence bundle and SPKI hash of an RA-TLS certificate. Refuses a critical or duplicate
/// evidence extension.
pub fn parse_ra_tls_cert(der: &[u8]) -> Result<(EvidenceBundle, [u8; 32])> {
    let cert = parse_cert("RA-TLS", der)?;
    let mut found = None;
    for e in cert.extensions() {
        if e.oid.to_id_string() == RA_TLS_EVIDENCE {
            if e.critical {
                return Err(Error::RaTls(
                    "evidence extension must be non-critical".into(),
                ));
            }
            if found.is_some() {
                return Err(Error::RaTls("duplicate evidence extension".into()));
            }
            found = Some(e.value);
        }
    }
    let raw =
        found.ok_or_else(|| Error::RaTls(format!("no evidence extension {RA_TLS_EVIDENCE}")))?;
    Ok((
        EvidenceBundle::decode(raw)?,
        spki_sha256(cert.public_key().raw),
    ))
}

/// Verify an RA-TLS certificate: its own validity at `now`, then the evidence with nonce = zeros
/// and its SPKI.
pub fn verify_ra_tls_cert(
    der: &[u8],
    policy: &Policy,
    model_sha256: Option<[u8; 32]>,
    now: OffsetDateTime,
) -> Result<Verdict> {
    verify_ra_tls_cert_with_kds(der, policy, model_sha256, now, None)
}

/// [`verify_ra_tls_cert`], fetching SEV-SNP certificates the bundle lacks from `kds`.
pub fn verify_ra_tls_cert_with_kds(
    der: &[u8],
    policy: &Policy,
    model_sha256: Option<[u8; 32]>,
    now: OffsetDateTime,
    kds: Option<&KdsClient>,
) -> Result<Verdict> {
    let cert = parse_cert("RA-TLS", der)?;
    crate::x509::check_validity("RA-TLS", &cert, now)?;
    let (bundle, spki) = parse_ra_tls_cert(der)?;
    let exp = Expectations {
        nonce: [0; 32],
        tls_spki_sha256: spki,
        model_sha256,
        nonce_issued_at: None,
    };
    Ok(match kds {
        Some(k) => verify_with_kds(&bundle, &exp, policy, now, k),
        None => verify(&bundle, &exp, policy, now),
    })
}

/// A rustls client verifier that accepts a server only if its RA-TLS evidence passes `policy`.
/// The last verdict is kept for display.
#[derive(Debug)]
pub struct RaTlsVerifier {
    policy: Policy,
    model_sha256: Option<[u8; 32]>,
    fixed_now: Option<OffsetDateTime>,
    kds: Option<Arc<KdsClient>>,
    provider: Arc<CryptoProvider>,
    last: Mutex<Option<Verdict>>,
}

impl RaTlsVerifier {
    pub fn new(policy: Policy, model_sha256: Option<[u8; 32]>) -> Self {
        RaTlsVerifier {
            policy,
            model_sha256,
            fixed_now: None,
            kds: None,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            last: Mutex::new(None),
        }
    }
    /// Verify at a fixed time instead of the handshake's clock (tests, stale evidence).
    pub fn at(mut self, now: OffsetDateTime) -> Self {
        self.fixed_now = Some(now);
        self
    }
    /// Fetch SEV-SNP certificates the evidence lacks from AMD KDS.
    pub fn with_kds(mut self, kds: Arc<KdsClient>) -> Self {
        self.kds = Some(kds);
        self
    }
    pub fn last_verdict(&self) -> Option<Verdict> {
        self.last.lock().ok().and_then(|g| g.clone())
    }
    /// A rustls client configuration using this verifier.
    pub fn client_config(self: Arc<Self>) -> Result<rustls::ClientConfig> {
        Ok(
            rustls::ClientConfig::builder_with_provider(self.provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::RaTls(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(self)
                .with_no_client_auth(),
        )
    }
}

impl ServerCertVerifier for RaTlsVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let t = self.fixed_now.unwrap_or_else(|| {
            OffsetDateTime::from_unix_timestamp(now.as_secs() as i64)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        });
        let verdict = verify_ra_tls_cert_with_kds(
            end_entity.as_ref(),
            &self.policy,
            self.model_sha256,
            t,
            self.kds.as_deref(),
        )
        .map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })?;
        let accepted = verdict.accepted;
        let msg = verdict.message();
        if let Ok(mut g) = self.last.lock() {
            *g = Some(verdict);
        }
        if accepted {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(Error::RaTls(msg)))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
