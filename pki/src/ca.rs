//! The cluster's certificate authority: made once by the first server, kept (certificate and
//! key, PEM) by the servers, signing every certificate a connection of the cluster presents.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::PkiError;
use crate::identity::Identity;

/// Certificates are dated this much before their issue, so a peer whose clock is slightly
/// behind does not see them as not valid yet.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The SHA-256 of a certificate's DER: what a join token pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of the first certificate in `pem`.
    pub fn of_pem(pem: &str) -> Result<Self, PkiError> {
        Ok(Fingerprint::of_der(&pem_der(pem)?))
    }

    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for Fingerprint {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|e| PkiError::Certificate(format!("fingerprint {s:?} is not 64 hex digits: {e}")))?;
        Ok(Fingerprint(bytes))
    }
}

/// A certificate the CA signed.
#[derive(Debug, Clone)]
pub struct Issued {
    pub certificate_pem: String,
    /// Hex; what a revocation names.
    pub serial: String,
    /// The end of its validity, unix milliseconds.
    pub not_after_ms: u64,
}

/// The cluster's CA: its certificate and the key that signs with it.
pub struct ClusterCa {
    certificate_pem: String,
    fingerprint: Fingerprint,
    issuer: Issuer<'static, KeyPair>,
}

impl ClusterCa {
    /// A new CA for cluster `cluster` (its common name), valid from `now` for `validity`.
    pub fn create(cluster: &str, now: SystemTime, validity: Duration) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, format!("sched cluster CA {cluster}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial()?);
        (params.not_before, params.not_after) = validity_window(now, validity)?;
        let certificate = params.self_signed(&key)?;
        let certificate_pem = certificate.pem();
        let fingerprint = Fingerprint::of_der(certificate.der());
        Ok(ClusterCa { certificate_pem, fingerprint, issuer: Issuer::new(params, key) })
    }

    /// The CA as the servers keep it: its certificate and key, PEM.
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Certificate(format!("the CA key: {e}")))?;
        let der = pem_der(certificate_pem)?;
        let fingerprint = Fingerprint::of_der(&der);
        let issuer = Issuer::from_ca_cert_der(&der.into(), key).map_err(|e| PkiError::Certificate(format!("the CA certificate: {e}")))?;
        Ok(ClusterCa { certificate_pem: certificate_pem.to_string(), fingerprint, issuer })
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The key, PEM: to be written only where the CA must be (the servers' data dirs, 0600).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// A certificate for `identity` on `public_key`, valid from `now` for `validity`, usable
    /// to connect and to serve; `names` (DNS names or IP addresses) are added for a server,
    /// which clients check against the address they dialled.
    pub fn issue(
        &self,
        identity: &Identity,
        public_key: &impl PublicKeyData,
        names: &[String],
        now: SystemTime,
        validity: Duration,
    ) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, identity.name());
        let uri = Ia5String::try_from(identity.uri()).map_err(|e| PkiError::Identity(e.to_string()))?;
        params.subject_alt_names.push(SanType::URI(uri));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone());
        (params.not_before, params.not_after) = validity_window(now, validity)?;
        let not_after_ms = u64::try_from(params.not_after.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let certificate = params.signed_by(public_key, &self.issuer)?;
        Ok(Issued { certificate_pem: certificate.pem(), serial: crate::holder::serial_hex(serial.as_ref()), not_after_ms })
    }

    /// A certificate for `identity` on the key of a certificate signing request (PEM). Only the
    /// request's key is used: what it asks to be called is ignored, `identity` is what the
    /// servers decided (from the join token and the name it joins as).
    pub fn issue_for_request(
        &self,
        identity: &Identity,
        request_pem: &str,
        names: &[String],
        now: SystemTime,
        validity: Duration,
    ) -> Result<Issued, PkiError> {
        let request = CertificateSigningRequestParams::from_pem(request_pem)
            .map_err(|e| PkiError::Certificate(format!("not a valid certificate signing request: {e}")))?;
        self.issue(identity, &request.public_key, names, now, validity)
    }
}

/// A fresh key pair (PEM) and a certificate signing request for it (PEM): what a joining node
/// sends, keeping the key to itself.
pub fn key_and_request(identity: &Identity) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, identity.name());
    let request = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), request.pem()?))
}

/// The DER of the first PEM block of `pem`.
pub(crate) fn pem_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| PkiError::Certificate(format!("not a PEM certificate: {e}")))?;
    Ok(block.contents)
}

/// 16 random bytes, the top bit clear (serials are positive integers).
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| PkiError::Random)?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

fn validity_window(now: SystemTime, validity: Duration) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    let to_time = |t: SystemTime| -> Result<OffsetDateTime, PkiError> {
        let since = t.duration_since(UNIX_EPOCH).map_err(|_| PkiError::Certificate("the clock is before 1970".into()))?;
        OffsetDateTime::from_unix_timestamp(since.as_secs() as i64).map_err(|e| PkiError::Certificate(format!("date out of range: {e}")))
    };
    Ok((to_time(now.checked_sub(BACKDATE).unwrap_or(now))?, to_time(now + validity)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;
    use x509_parser::prelude::{FromDer, X509Certificate};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn der(pem: &str) -> Vec<u8> {
        pem_der(pem).unwrap()
    }

    #[test]
    fn a_certificate_names_its_holder_and_verifies_against_the_ca() {
        let now = SystemTime::now();
        let ca = ClusterCa::create("test", now, 365 * DAY).unwrap();
        let node = Identity::new(Role::Agent, "node1").unwrap();
        let (_key, request) = key_and_request(&node).unwrap();
        let issued = ca.issue_for_request(&node, &request, &[], now, DAY).unwrap();
        let cert_der = der(&issued.certificate_pem);
        assert_eq!(Identity::from_certificate_der(&cert_der).unwrap(), node);

        let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
        let ca_der = der(ca.certificate_pem());
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).expect("signed by the CA");
        assert!(!cert.is_ca());
        assert!(ca_cert.is_ca());
        assert_eq!(cert.subject().to_string(), "CN=node1");
        let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime as u64, DAY.as_secs() + BACKDATE.as_secs());
        assert_eq!(issued.serial, hex::encode(cert.raw_serial()));
    }

    #[test]
    fn a_reloaded_ca_keeps_its_fingerprint_and_signs_the_same() {
        let now = SystemTime::now();
        let ca = ClusterCa::create("test", now, DAY).unwrap();
        let again = ClusterCa::from_pem(ca.certificate_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        assert_eq!(ca.fingerprint(), Fingerprint::of_der(&der(ca.certificate_pem())));
        assert_eq!(ca.fingerprint().to_string().parse::<Fingerprint>().unwrap(), ca.fingerprint());

        let server = Identity::new(Role::Server, "2").unwrap();
        let key = KeyPair::generate().unwrap();
        let issued = again.issue(&server, &key, &["127.0.0.1".into(), "sched-2.lan".into()], now, DAY).unwrap();
        let cert_der = der(&issued.certificate_pem);
        let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
        let ca_der = der(ca.certificate_pem());
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).expect("the reloaded CA signs as the first");
        assert_eq!(Identity::from_certificate_der(&cert_der).unwrap(), server);
    }

    #[test]
    fn another_clusters_ca_does_not_verify_our_certificates() {
        let now = SystemTime::now();
        let ours = ClusterCa::create("ours", now, DAY).unwrap();
        let theirs = ClusterCa::create("theirs", now, DAY).unwrap();
        assert_ne!(ours.fingerprint(), theirs.fingerprint());
        let issued = theirs.issue(&Identity::new(Role::Admin, "mallory").unwrap(), &KeyPair::generate().unwrap(), &[], now, DAY).unwrap();
        let cert_der = der(&issued.certificate_pem);
        let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
        let ours_der = der(ours.certificate_pem());
        let (_, ours_cert) = X509Certificate::from_der(&ours_der).unwrap();
        assert!(cert.verify_signature(Some(ours_cert.public_key())).is_err());
    }

    #[test]
    fn bad_inputs_are_refused_with_what_is_wrong() {
        let now = SystemTime::now();
        let ca = ClusterCa::create("test", now, DAY).unwrap();
        let node = Identity::new(Role::Agent, "n").unwrap();
        let err = ca.issue_for_request(&node, "not a request", &[], now, DAY).unwrap_err().to_string();
        assert!(err.contains("not a valid certificate signing request"), "{err}");
        let err = ClusterCa::from_pem("garbage", &ca.key_pem()).err().unwrap().to_string();
        assert!(err.contains("not a PEM certificate"), "{err}");
        let err = ClusterCa::from_pem(ca.certificate_pem(), "garbage").err().unwrap().to_string();
        assert!(err.contains("the CA key"), "{err}");
        let err = "abc".parse::<Fingerprint>().unwrap_err().to_string();
        assert!(err.contains("not 64 hex digits"), "{err}");
        // A certificate without a sched:// identity names nobody.
        let plain = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let err = Identity::from_certificate_der(plain.cert.der()).unwrap_err().to_string();
        assert!(err.contains("names no sched:// identity"), "{err}");
    }
}
