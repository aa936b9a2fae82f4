//! The certificates the CA issues are the ones rustls (webpki) accepts for mutual TLS 1.3: a
//! handshake in memory, the server checking the client against the cluster's CA and reading
//! the client's identity from its certificate; a stranger's certificate and no certificate are
//! refused.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pki::{ClusterCa, Identity, Role, key_and_request};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

const DAY: Duration = Duration::from_secs(24 * 3600);

struct Credentials {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn credentials(ca: &ClusterCa, identity: &Identity, names: &[String]) -> Credentials {
    let (key_pem, request) = key_and_request(identity).unwrap();
    let issued = ca.issue_for_request(identity, &request, names, SystemTime::now(), DAY).unwrap();
    Credentials {
        chain: vec![CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap()],
        key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
    }
}

fn roots(ca: &ClusterCa) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.certificate_pem().as_bytes()).unwrap()).unwrap();
    Arc::new(roots)
}

/// Runs a handshake between a server of `ca`'s cluster and a client presenting `client` (or no
/// certificate), both trusting `ca`; the client's identity as the server read it, or the error.
fn handshake(ca: &ClusterCa, server: Credentials, client: Option<Credentials>) -> Result<Identity, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), provider.clone()).build().unwrap();
    let server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(server.chain, server.key)
        .unwrap();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots(ca));
    let client_config = match client {
        Some(c) => builder.with_client_auth_cert(c.chain, c.key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let mut client = ClientConnection::new(Arc::new(client_config), ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    let mut server = ServerConnection::new(Arc::new(server_config)).unwrap();
    for _ in 0..10 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        server.read_tls(&mut wire.as_slice()).unwrap();
        server.process_new_packets().map_err(|e| format!("server: {e}"))?;
        let mut wire = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        client.read_tls(&mut wire.as_slice()).unwrap();
        client.process_new_packets().map_err(|e| format!("client: {e}"))?;
        if !client.is_handshaking() && !server.is_handshaking() {
            let peer = server.peer_certificates().ok_or("no client certificate")?;
            return Identity::from_certificate_der(&peer[0]).map_err(|e| e.to_string());
        }
    }
    Err("the handshake did not finish".into())
}

#[test]
fn mutual_tls_accepts_the_clusters_certificates_and_reads_the_identity() {
    let ca = ClusterCa::create("test", SystemTime::now(), DAY).unwrap();
    let server = Identity::new(Role::Server, "1").unwrap();
    let agent = Identity::new(Role::Agent, "node1").unwrap();
    let seen = handshake(&ca, credentials(&ca, &server, &["127.0.0.1".into()]), Some(credentials(&ca, &agent, &[])));
    assert_eq!(seen, Ok(agent));
}

#[test]
fn a_stranger_or_no_certificate_is_refused() {
    let ca = ClusterCa::create("ours", SystemTime::now(), DAY).unwrap();
    let other = ClusterCa::create("theirs", SystemTime::now(), DAY).unwrap();
    let server = || credentials(&ca, &Identity::new(Role::Server, "1").unwrap(), &["127.0.0.1".into()]);
    let admin = Identity::new(Role::Admin, "mallory").unwrap();
    let err = handshake(&ca, server(), Some(credentials(&other, &admin, &[]))).unwrap_err();
    assert!(err.contains("server:") && err.contains("UnknownIssuer"), "{err}");
    let err = handshake(&ca, server(), None).unwrap_err();
    assert!(err.contains("server:") && err.contains("certificate"), "{err}");
    // A server certificate for another address does not pass the client's name check.
    let elsewhere = credentials(&ca, &Identity::new(Role::Server, "1").unwrap(), &["10.0.0.9".into()]);
    let err = handshake(&ca, elsewhere, Some(credentials(&ca, &admin, &[]))).unwrap_err();
    assert!(err.contains("client:") && err.contains("not valid for name"), "{err}");
}
