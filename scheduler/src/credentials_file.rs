//! The credentials file of a `sched` user: which servers to ask and the certificate to ask
//! with. A server writes one for its admin on every start (`/etc/sched/admin.toml` unless
//! `--admin-credentials` says otherwise, mode 0600, so root on a server's machine is admin,
//! as with k3s's kubeconfig); `sched login` writes one from a reader or admin token.
//!
//! ```toml
//! servers = ["10.0.0.1:7700"]
//! ca = "-----BEGIN CERTIFICATE-----\n..."
//! certificate = "-----BEGIN CERTIFICATE-----\n..."
//! key = "-----BEGIN PRIVATE KEY-----\n..."
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use transport::Credentials;

/// Where `sched` looks for credentials when neither `--config` nor `SCHED_CONFIG` names a file.
pub const DEFAULT_CREDENTIALS_FILE: &str = "/etc/sched/admin.toml";

/// A credentials file's contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    /// Servers to ask, `HOST:PORT`, used when `--server` (`SCHED_SERVER`) is not given.
    pub servers: Vec<String>,
    /// The cluster CA's certificate, PEM.
    pub ca: String,
    /// The user's certificate, PEM.
    pub certificate: String,
    /// The user's private key, PEM.
    pub key: String,
}

/// Why a credentials file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsFileError {
    #[error("cannot read the credentials file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the credentials file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write the credentials file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl CredentialsFile {
    pub fn new(servers: Vec<String>, credentials: Credentials) -> CredentialsFile {
        CredentialsFile { servers, ca: credentials.ca_pem, certificate: credentials.certificate_pem, key: credentials.key_pem }
    }

    /// The TLS credentials in the file.
    pub fn credentials(&self) -> Credentials {
        Credentials { ca_pem: self.ca.clone(), certificate_pem: self.certificate.clone(), key_pem: self.key.clone() }
    }

    pub fn load(path: &Path) -> Result<CredentialsFile, CredentialsFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsFileError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|e| CredentialsFileError::Parse { path: path.into(), message: e.message().to_string() })
    }

    /// Writes the file (mode 0600, replaced atomically), making its directory if needed.
    pub fn save(&self, path: &Path) -> Result<(), CredentialsFileError> {
        let failed = |source| CredentialsFileError::Write { path: path.into(), source };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        let text = toml::to_string(self).map_err(|e| failed(std::io::Error::other(e)))?;
        let text = format!("# sched credentials: who you are to the cluster. Keep this file private.\n{text}");
        transport::write_private(path, text.as_bytes()).map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credentials_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/sched/admin.toml");
        let file = CredentialsFile::new(
            vec!["127.0.0.1:7700".into()],
            Credentials { ca_pem: "ca\n".into(), certificate_pem: "cert\n".into(), key_pem: "key\n".into() },
        );
        file.save(&path).unwrap();
        assert_eq!(CredentialsFile::load(&path).unwrap(), file);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "servers = 3").unwrap();
        let err = CredentialsFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("admin.toml is not valid"), "{err}");
    }
}
