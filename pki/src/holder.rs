//! What the servers read from a peer's certificate once TLS has verified it: who holds it,
//! its serial (what revocation names) and when it expires.

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::PkiError;
use crate::identity::Identity;

/// The holder of a verified certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertificateHolder {
    pub identity: Identity,
    /// The serial number, lowercase hex without leading zeros.
    pub serial: String,
    /// Unix milliseconds from which the certificate is valid.
    pub not_before_ms: u64,
    /// Unix milliseconds after which the certificate is no longer valid.
    pub not_after_ms: u64,
}

impl CertificateHolder {
    /// Reads a certificate (DER). It must name exactly one sched identity.
    pub fn from_certificate_der(der: &[u8]) -> Result<CertificateHolder, PkiError> {
        let identity = Identity::from_certificate_der(der)?;
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Certificate(format!("cannot parse it: {e}")))?;
        let ms = |t: i64| u64::try_from(t).unwrap_or(0).saturating_mul(1000);
        Ok(CertificateHolder {
            identity,
            serial: serial_hex(cert.raw_serial()),
            not_before_ms: ms(cert.validity().not_before.timestamp()),
            not_after_ms: ms(cert.validity().not_after.timestamp()),
        })
    }

    /// When the certificate was issued: its start of validity, less the [`crate::BACKDATE`]
    /// every certificate is dated back by.
    pub fn issued_ms(&self) -> u64 {
        self.not_before_ms.saturating_add(crate::BACKDATE.as_millis() as u64).min(self.not_after_ms)
    }

    /// Reads the first certificate of `pem`.
    pub fn from_certificate_pem(pem: &str) -> Result<CertificateHolder, PkiError> {
        CertificateHolder::from_certificate_der(&crate::ca::pem_der(pem)?)
    }
}

/// A serial's bytes as lowercase hex, leading zero bytes dropped (DER may or may not keep one).
pub(crate) fn serial_hex(bytes: &[u8]) -> String {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    hex::encode(&bytes[first..])
}
