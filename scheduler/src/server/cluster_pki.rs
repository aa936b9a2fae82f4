//! The server's side of the cluster PKI on disk: the CA it issues with and its own
//! certificate, in `DATA_DIR/pki`, and the admin credentials file it writes for the CLI.
//!
//! Where the CA comes from, on a server's first start (later starts find it in `DATA_DIR/pki`):
//! - `--ca-dir DIR` (made by `sched ca create DIR`): the servers of an initial cluster of
//!   several share one CA, made before any of them starts;
//! - a server that joined with a server token got it from the cluster (`sched server --join`);
//! - otherwise a server that is the only member of its initial cluster (and `sched dev`)
//!   creates it: the first server of a cluster.
//!
//! The CA key lives in every server's data dir (mode 0600) and nowhere else: every server issues
//! certificates (to joining nodes, to renewing agents, its own on every start), and a server can
//! in any case act as any node, so keeping the key from servers would protect nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use pki::{ClusterCa, Identity, Role};
use transport::Credentials;

use super::ServerError;

/// The CA certificate in a CA directory (`--ca-dir`, `DATA_DIR/pki`).
pub const CA_CERTIFICATE_FILE: &str = "ca.pem";
/// The CA key in a CA directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// How long a CA made here is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a server's own certificate is valid; a new one is issued on every start.
pub const SERVER_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long the admin certificate in the credentials file is valid.
pub const ADMIN_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// The name of the admin identity a server writes.
pub const ADMIN_NAME: &str = "admin";

/// How a server's connections are secured (mutual TLS), from its flags.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// A CA to start from when `DATA_DIR/pki` has none (`sched ca create DIR`).
    pub ca_dir: Option<PathBuf>,
    /// Where to write the admin credentials file (`/etc/sched/admin.toml`), on every start.
    pub admin_credentials: Option<PathBuf>,
    /// How long the certificates of joining agents (and servers) are valid; agents renew
    /// theirs when two thirds have passed.
    pub node_certificate_ttl: Duration,
}

/// A server's PKI: the CA it issues with and its own credentials.
pub struct ServerPki {
    pub ca: ClusterCa,
    pub credentials: Credentials,
    pub node_certificate_ttl: Duration,
}

fn pki_error(what: String) -> ServerError {
    ServerError::Pki(what)
}

/// The CA in `dir`, if it holds one.
pub fn load_ca(dir: &Path) -> Result<Option<ClusterCa>, ServerError> {
    let (certificate, key) = (dir.join(CA_CERTIFICATE_FILE), dir.join(CA_KEY_FILE));
    if !certificate.exists() {
        return Ok(None);
    }
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| pki_error(format!("cannot read {}: {e}", p.display())));
    let ca = ClusterCa::from_pem(&read(&certificate)?, &read(&key)?).map_err(|e| pki_error(format!("the CA in {}: {e}", dir.display())))?;
    Ok(Some(ca))
}

/// Writes `ca` (certificate and key, the key 0600) into `dir`.
pub fn save_ca(ca: &ClusterCa, dir: &Path) -> Result<(), ServerError> {
    let failed = |e: std::io::Error| pki_error(format!("cannot write the CA into {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(failed)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(failed)?;
    transport::write_private(&dir.join(CA_KEY_FILE), ca.key_pem().as_bytes()).map_err(failed)?;
    transport::write_private(&dir.join(CA_CERTIFICATE_FILE), ca.certificate_pem().as_bytes()).map_err(failed)
}

/// A new CA for a cluster (`sched ca create`, and the first server).
pub fn create_ca() -> Result<ClusterCa, ServerError> {
    ClusterCa::create("sched", SystemTime::now(), CA_VALIDITY).map_err(|e| pki_error(e.to_string()))
}

/// The names a server's certificate is valid for: the servers' common name, loopback (for
/// tools on the same machine) and the host it advertises.
fn server_names(advertise: &str) -> Vec<String> {
    let mut names: Vec<String> = super::pki_api::SERVER_CERTIFICATE_NAMES.iter().map(|n| n.to_string()).collect();
    if let Some(host) = advertised_host(advertise)
        && !names.contains(&host)
    {
        names.push(host);
    }
    names
}

/// The host of a `HOST:PORT` address, as a certificate name; `None` when it is empty or
/// unspecified (0.0.0.0, ::), which names no one.
pub fn advertised_host(address: &str) -> Option<String> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host).trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && host != "0.0.0.0" && host != "::").then(|| host.to_string())
}

/// Credentials for `identity`, valid for `names`, on a fresh key.
pub fn issue(ca: &ClusterCa, identity: &Identity, names: &[String], validity: Duration) -> Result<Credentials, ServerError> {
    let (key_pem, request_pem) = pki::key_and_request(identity).map_err(|e| pki_error(e.to_string()))?;
    let issued = ca
        .issue_for_request(identity, &request_pem, names, SystemTime::now(), validity)
        .map_err(|e| pki_error(format!("cannot issue a certificate for {identity}: {e}")))?;
    Ok(Credentials { ca_pem: ca.certificate_pem().to_string(), certificate_pem: issued.certificate_pem, key_pem })
}

/// The server's PKI for this start: its CA (found, given, or created when `first_server`) and
/// a fresh certificate of its own, saved in `DATA_DIR/pki`; then the admin credentials file.
pub fn prepare(tls: &ServerTls, data_dir: &Path, id: u64, advertise: &str, first_server: bool) -> Result<ServerPki, ServerError> {
    let dir = data_dir.join("pki");
    let ca = match load_ca(&dir)? {
        Some(ca) => ca,
        None => {
            let ca = match &tls.ca_dir {
                Some(given) => load_ca(given)?.ok_or_else(|| {
                    pki_error(format!(
                        "--ca-dir {}: no {CA_CERTIFICATE_FILE} there (make one with `sched ca create {}`)",
                        given.display(),
                        given.display()
                    ))
                })?,
                None if first_server => {
                    tracing::info!(dir = %dir.display(), "creating the cluster CA");
                    create_ca()?
                }
                None => {
                    return Err(pki_error(
                        "no cluster CA: the servers of an initial cluster of several share one; make it with \
                         `sched ca create DIR` and start each with --ca-dir DIR (a server added later joins with \
                         --join TOKEN instead)"
                            .into(),
                    ));
                }
            };
            save_ca(&ca, &dir)?;
            ca
        }
    };
    let identity = Identity::new(Role::Server, &id.to_string()).map_err(|e| pki_error(e.to_string()))?;
    let credentials = issue(&ca, &identity, &server_names(advertise), SERVER_CERTIFICATE_VALIDITY)?;
    credentials.save(&dir.join("server")).map_err(|e| pki_error(e.to_string()))?;
    if let Some(path) = &tls.admin_credentials {
        write_admin_credentials(&ca, path, advertise)?;
    }
    tracing::info!(ca = %ca.fingerprint(), "cluster PKI ready");
    Ok(ServerPki { ca, credentials, node_certificate_ttl: tls.node_certificate_ttl })
}

/// Writes an admin credentials file for the CLI at `path` (mode 0600), naming `advertise` as
/// the server to ask.
pub fn write_admin_credentials(ca: &ClusterCa, path: &Path, advertise: &str) -> Result<(), ServerError> {
    let identity = Identity::new(Role::Admin, ADMIN_NAME).map_err(|e| pki_error(e.to_string()))?;
    let credentials = issue(ca, &identity, &[], ADMIN_CERTIFICATE_VALIDITY)?;
    let file = crate::credentials_file::CredentialsFile::new(vec![advertise.to_string()], credentials);
    file.save(path).map_err(|e| pki_error(e.to_string()))?;
    tracing::info!(path = %path.display(), "admin credentials written (sched reads them when run as root here)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_certificate_names_the_servers_name_loopback_and_its_host() {
        assert_eq!(server_names("10.0.0.5:7700"), ["server.sched", "localhost", "127.0.0.1", "::1", "10.0.0.5"]);
        assert_eq!(server_names("127.0.0.1:7700"), ["server.sched", "localhost", "127.0.0.1", "::1"]);
        assert_eq!(server_names("[fd00::1]:7700").last().unwrap(), "fd00::1");
        assert_eq!(server_names("0.0.0.0:7700").len(), 4, "an unspecified address names nothing");
    }

    #[test]
    fn the_first_server_creates_the_ca_and_later_starts_keep_it() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ServerTls {
            ca_dir: None,
            admin_credentials: Some(dir.path().join("admin.toml")),
            node_certificate_ttl: Duration::from_secs(3600),
        };
        let first = prepare(&tls, dir.path(), 1, "127.0.0.1:7700", true).unwrap();
        let again = prepare(&tls, dir.path(), 1, "127.0.0.1:7700", false).unwrap();
        assert_eq!(first.ca.fingerprint(), again.ca.fingerprint());
        assert_ne!(first.credentials.certificate_pem, again.credentials.certificate_pem, "a fresh certificate each start");
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.path().join("pki").join(CA_KEY_FILE)).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        let admin = crate::credentials_file::CredentialsFile::load(&dir.path().join("admin.toml")).unwrap();
        assert_eq!(admin.servers, ["127.0.0.1:7700"]);
    }

    #[test]
    fn a_server_of_a_bigger_initial_cluster_needs_a_given_ca() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ServerTls { ca_dir: None, admin_credentials: None, node_certificate_ttl: Duration::from_secs(3600) };
        let err = prepare(&tls, dir.path(), 2, "127.0.0.1:7701", false).err().unwrap().to_string();
        assert!(err.contains("sched ca create"), "{err}");
        assert!(!dir.path().join("pki").join(CA_CERTIFICATE_FILE).exists(), "nothing made");

        let shared = dir.path().join("shared-ca");
        save_ca(&create_ca().unwrap(), &shared).unwrap();
        let given = ServerTls { ca_dir: Some(shared.clone()), ..tls };
        let server = prepare(&given, &dir.path().join("s2"), 2, "127.0.0.1:7701", false).unwrap();
        assert_eq!(server.ca.fingerprint(), load_ca(&shared).unwrap().unwrap().fingerprint());
    }
}
