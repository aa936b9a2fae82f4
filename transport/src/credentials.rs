//! A process's TLS credentials: its certificate and key and the cluster CA, as PEM, and how
//! they are kept on disk (a directory with `ca.pem`, `cert.pem` and `key.pem`, the key 0600).

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::TransportError;

/// The cluster CA's certificate, this process's certificate and its private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub ca_pem: String,
    pub certificate_pem: String,
    pub key_pem: String,
}

// The key never reaches logs through Debug.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("certificate_pem_bytes", &self.certificate_pem.len())
            .finish()
    }
}

/// The CA's certificate in a credentials directory.
pub const CA_FILE: &str = "ca.pem";
/// This process's certificate in a credentials directory.
pub const CERTIFICATE_FILE: &str = "cert.pem";
/// This process's private key in a credentials directory (mode 0600).
pub const KEY_FILE: &str = "key.pem";

impl Credentials {
    /// The credentials kept in `dir`, `None` when it holds no certificate yet (a node that has
    /// not joined). A directory with a certificate but no key or CA is an error naming the file.
    pub fn load(dir: &Path) -> Result<Option<Credentials>, TransportError> {
        let certificate = dir.join(CERTIFICATE_FILE);
        if !certificate.exists() {
            return Ok(None);
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| TransportError::Credentials(format!("cannot read {}: {e}", path.display())))
        };
        Ok(Some(Credentials { ca_pem: read(CA_FILE)?, certificate_pem: read(CERTIFICATE_FILE)?, key_pem: read(KEY_FILE)? }))
    }

    /// Writes the credentials into `dir` (made 0700 if missing): each file replaced atomically,
    /// the key 0600, the certificate last, so that a crash in between leaves the old
    /// certificate or none, never a certificate without its key.
    pub fn save(&self, dir: &Path) -> Result<(), TransportError> {
        let failed = |what: &str, e: std::io::Error| TransportError::Credentials(format!("cannot write {what} in {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| failed("the directory", e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| failed("the directory", e))?;
        write_private(&dir.join(KEY_FILE), self.key_pem.as_bytes()).map_err(|e| failed(KEY_FILE, e))?;
        write_private(&dir.join(CA_FILE), self.ca_pem.as_bytes()).map_err(|e| failed(CA_FILE, e))?;
        write_private(&dir.join(CERTIFICATE_FILE), self.certificate_pem.as_bytes()).map_err(|e| failed(CERTIFICATE_FILE, e))
    }
}

/// Writes `contents` to `path` through a temporary file (mode 0600, synced, renamed over it).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    // A name of this process's own: two processes writing the same file never share one.
    let name = path.file_name().map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    // An existing temporary file keeps its mode: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_through_a_directory_with_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("pki");
        assert_eq!(Credentials::load(&inside).unwrap(), None, "nothing there yet");
        let credentials = Credentials { ca_pem: "ca".into(), certificate_pem: "cert".into(), key_pem: "key".into() };
        credentials.save(&inside).unwrap();
        assert_eq!(Credentials::load(&inside).unwrap(), Some(credentials));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&inside.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&inside), 0o700);
        std::fs::remove_file(inside.join(KEY_FILE)).unwrap();
        let err = Credentials::load(&inside).unwrap_err().to_string();
        assert!(err.contains("key.pem"), "{err}");
    }
}
