//! TLS termination: a certificate chain and a private key from PEM files, rustls with the
//! ring provider, and ALPN offering `h2` then `http/1.1` so clients get HTTP/2 when they can.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;

/// The PEM files to terminate TLS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The rustls configuration for `files`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, Error> {
    let read_error = |what, path: &PathBuf| {
        let path = path.clone();
        move |source| Error::TlsFile { what, path, source }
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(read_error("certificate", &files.cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error("certificate", &files.cert))?;
    if certs.is_empty() {
        return Err(Error::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(read_error("key", &files.key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
