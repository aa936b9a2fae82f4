//! The rustls configurations behind [`crate::Security`]: TLS 1.3 only, ring as the crypto
//! provider, h2 by ALPN (gRPC clients such as grpc-go insist on it).
//!
//! - Mutual TLS: clients trust only the cluster CA and present this process's certificate;
//!   servers ask every client for a certificate chaining to the CA but also accept clients
//!   without one, because joining with a token happens before a node has a certificate. Who
//!   may call what is decided per method afterwards ([`crate::authorize`]), with the verified
//!   identity in hand.
//! - Joining: the client has no CA yet, only the fingerprint its token pins. It trusts a
//!   server whose chain contains a certificate with that fingerprint and whose own certificate
//!   that CA signed ([`PinnedCa`]); servers send the CA in their chain for this.
//!
//! This process's certificate sits in an [`IdentitySlot`] that both configurations read on
//! every handshake, so a renewed certificate is used from the next connection on without
//! rebuilding anything.

use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::{Credentials, TransportError};

/// ALPN: HTTP/2, what gRPC runs on.
const H2: &[u8] = b"h2";

/// The client and (when this process has a certificate) server configurations.
#[derive(Debug)]
pub(crate) struct TlsConfigs {
    pub client: Arc<ClientConfig>,
    pub server: Option<Arc<ServerConfig>>,
    pub identity: Option<Arc<IdentitySlot>>,
    provider: Arc<CryptoProvider>,
    ca: Option<CertificateDer<'static>>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(what: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Credentials(format!("{what}: {e}"))
}

impl TlsConfigs {
    /// Mutual TLS with `credentials`.
    pub fn mutual(credentials: &Credentials) -> Result<TlsConfigs, TransportError> {
        let provider = provider();
        let ca = CertificateDer::from_pem_slice(credentials.ca_pem.as_bytes()).map_err(|e| bad("the CA certificate is not PEM", e))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).map_err(|e| bad("the CA certificate", e))?;
        let roots = Arc::new(roots);
        let identity = Arc::new(IdentitySlot::new(certified_key(&provider, &credentials.certificate_pem, &credentials.key_pem, &ca)?));

        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bad("TLS 1.3", e))?
            .with_root_certificates(roots.clone())
            .with_client_cert_resolver(identity.clone());
        client.alpn_protocols = vec![H2.to_vec()];
        // No session resumption: a resumed session keeps the certificate of the one it
        // resumes, so a renewed certificate would not be seen (nor an expired one noticed).
        // Connections are long-lived; a full handshake each is cheap.
        client.resumption = rustls::client::Resumption::disabled();

        let clients = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| bad("the client certificate verifier", e))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bad("TLS 1.3", e))?
            .with_client_cert_verifier(clients)
            .with_cert_resolver(identity.clone());
        server.alpn_protocols = vec![H2.to_vec()];
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(TlsConfigs { client: Arc::new(client), server: Some(Arc::new(server)), identity: Some(identity), provider, ca: Some(ca) })
    }

    /// A joining client: trusts the CA with `fingerprint`, presents no certificate.
    pub fn join(fingerprint: pki::Fingerprint) -> Result<TlsConfigs, TransportError> {
        let provider = provider();
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bad("TLS 1.3", e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCa { fingerprint, provider: provider.clone() }))
            .with_no_client_auth();
        client.alpn_protocols = vec![H2.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        Ok(TlsConfigs { client: Arc::new(client), server: None, identity: None, provider, ca: None })
    }

    /// Puts a new certificate and key in place of this process's (renewal).
    pub fn replace_identity(&self, certificate_pem: &str, key_pem: &str) -> Result<(), TransportError> {
        let (Some(slot), Some(ca)) = (&self.identity, &self.ca) else {
            return Err(TransportError::Credentials("this process has no certificate to replace".into()));
        };
        slot.replace(certified_key(&self.provider, certificate_pem, key_pem, ca)?);
        Ok(())
    }
}

/// The chain this process presents (its certificate, then the CA, so that a joining peer can
/// find the CA it pins) and the key that signs with it; the key must match the certificate.
fn certified_key(
    provider: &CryptoProvider,
    certificate_pem: &str,
    key_pem: &str,
    ca: &CertificateDer<'static>,
) -> Result<CertifiedKey, TransportError> {
    let mut chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(certificate_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| bad("the certificate is not PEM", e))?;
    if chain.is_empty() {
        return Err(TransportError::Credentials("the certificate file holds no certificate".into()));
    }
    if !chain.contains(ca) {
        chain.push(ca.clone());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad("the key is not a PEM private key", e))?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| bad("the key", e))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| bad("the key does not belong to the certificate", e))?;
    Ok(certified)
}

/// This process's certificate and key, replaceable while connections use them.
#[derive(Debug)]
pub(crate) struct IdentitySlot {
    current: RwLock<Arc<CertifiedKey>>,
}

impl IdentitySlot {
    fn new(key: CertifiedKey) -> IdentitySlot {
        IdentitySlot { current: RwLock::new(Arc::new(key)) }
    }

    fn replace(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(key);
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl ResolvesClientCert for IdentitySlot {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for IdentitySlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// Trusts a server whose chain holds the CA with the pinned fingerprint, and whose own
/// certificate that CA signed for the expected name.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: pki::Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates.iter().find(|c| pki::Fingerprint::of_der(c) == self.fingerprint).ok_or_else(|| {
            rustls::Error::General(format!(
                "the server's CA is not the one the token pins ({}): the token is for another cluster",
                self.fingerprint
            ))
        })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
