//! The node's certificate: where it comes from, and its renewal.
//!
//! `sched-agent` keeps its credentials in `DATA_DIR/pki` (the key mode 0600). On its first start
//! it has none and joins with a token (`--join TOKEN`): it sends a certificate signing request
//! for its node name, trusting only servers whose CA the token pins, and keeps what comes back.
//! Later starts use the kept certificate and need no token. While it runs, the agent renews the
//! certificate when two thirds of its life have passed, on a fresh key, and uses the new one
//! from the next connection on. `sched dev` issues its agent's certificate itself
//! ([`NodeCredentials::Given`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pki::CertificateHolder;
use transport::{Credentials, Security, Transport};

use crate::error::{AgentError, Result};

/// How the agent gets its credentials.
#[derive(Clone, Debug)]
pub enum NodeCredentials {
    /// Given by the process that embeds the agent (`sched dev`; plaintext in in-process tests):
    /// used as they are, never renewed.
    Given(Security),
    /// Kept in `DATA_DIR/pki`, joined with the token on first start, renewed while running.
    Stored { join_token: Option<String> },
}

/// The agent's transport, and the renewal to run beside it (for stored credentials).
pub struct Resolved {
    pub transport: Transport,
    pub renewal: Option<Renewal>,
}

/// Renews a stored certificate before it expires.
pub struct Renewal {
    dir: PathBuf,
    servers: Vec<String>,
    addresses: Vec<String>,
    holder: CertificateHolder,
}

/// Where the agent keeps its credentials.
pub fn credentials_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

/// The host part of `address` (`HOST` or `HOST:PORT`), as a certificate name.
fn host_of(address: &str) -> Vec<String> {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) && !host.is_empty() => host,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host == "0.0.0.0" || host == "::" { Vec::new() } else { vec![host.to_string()] }
}

/// The credentials to start with: given, kept, or obtained by joining with the token.
pub async fn resolve(credentials: &NodeCredentials, data_dir: &Path, name: &str, servers: &[String], address: &str) -> Result<Resolved> {
    let join_token = match credentials {
        NodeCredentials::Given(security) => {
            return Ok(Resolved { transport: Transport::new(security.clone()).map_err(AgentError::Transport)?, renewal: None });
        }
        NodeCredentials::Stored { join_token } => join_token,
    };
    let dir = credentials_dir(data_dir);
    let addresses = host_of(address);
    let kept = Credentials::load(&dir).map_err(AgentError::Transport)?;
    let credentials = match kept {
        Some(kept) => kept,
        None => {
            let Some(token) = join_token else {
                return Err(AgentError::Credentials(format!(
                    "this node has no certificate yet ({} is empty): start it once with --join TOKEN \
                     (make one on a server with `sched token create --role agent`)",
                    dir.display()
                )));
            };
            let parsed: pki::JoinToken = token.parse().map_err(|e: pki::TokenError| AgentError::Credentials(format!("--join: {e}")))?;
            if parsed.role != pki::Role::Agent {
                return Err(AgentError::Credentials(format!(
                    "--join: this is a {} token; an agent joins with an agent token (`sched token create --role agent`)",
                    parsed.role
                )));
            }
            let issued = transport::join::join_with_token(servers, token, name, &addresses)
                .await
                .map_err(|e| AgentError::Credentials(format!("cannot join the cluster: {e}")))?;
            issued.credentials.save(&dir).map_err(AgentError::Transport)?;
            tracing::info!(node = name, serial = issued.serial, "joined the cluster");
            issued.credentials
        }
    };
    let holder = CertificateHolder::from_certificate_pem(&credentials.certificate_pem)
        .map_err(|e| AgentError::Credentials(format!("the certificate in {}: {e}", dir.display())))?;
    if holder.identity.name() != name {
        return Err(AgentError::Credentials(format!(
            "the certificate in {} is node {:?}'s, not {name:?}: start with --name {} (or remove {} and join again)",
            dir.display(),
            holder.identity.name(),
            holder.identity.name(),
            dir.display()
        )));
    }
    let transport = Transport::new(Security::MutualTls(credentials)).map_err(AgentError::Transport)?;
    Ok(Resolved { transport, renewal: Some(Renewal { dir, servers: servers.to_vec(), addresses, holder }) })
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// When a certificate issued at `issued_ms` and valid until `not_after_ms` is renewed: two
/// thirds into its life.
pub fn renew_at(issued_ms: u64, not_after_ms: u64) -> u64 {
    issued_ms + not_after_ms.saturating_sub(issued_ms) / 3 * 2
}

impl Renewal {
    /// Renews the certificate whenever two thirds of its life have passed, forever. A failed
    /// renewal is retried (every tenth of the time left, at least every second, at most every
    /// minute) until the certificate expires; after that the servers refuse the node, which
    /// must join again.
    pub async fn run(mut self, transport: Transport) {
        loop {
            let due = renew_at(self.holder.issued_ms(), self.holder.not_after_ms);
            // At most one renewal a second, whatever the certificate says.
            let wait = Duration::from_millis(due.saturating_sub(now_ms())).max(Duration::from_secs(1));
            tokio::time::sleep(wait).await;
            match transport::join::renew(&transport, &self.servers, &self.holder.identity, &self.addresses).await {
                Ok(issued) => {
                    let saved = issued.credentials.save(&self.dir);
                    let used = transport.replace_identity(&issued.credentials.certificate_pem, &issued.credentials.key_pem);
                    match (saved, used, CertificateHolder::from_certificate_pem(&issued.credentials.certificate_pem)) {
                        (Ok(()), Ok(()), Ok(holder)) => {
                            tracing::info!(serial = holder.serial, not_after_ms = holder.not_after_ms, "renewed the node certificate");
                            self.holder = holder;
                        }
                        (saved, used, read) => {
                            tracing::warn!(?saved, ?used, ?read, "a renewed certificate could not be used; trying again");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                Err(e) => {
                    let left = self.holder.not_after_ms.saturating_sub(now_ms());
                    let retry = Duration::from_millis(left / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
                    tracing::warn!("cannot renew the node certificate ({e}); trying again in {retry:?}");
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_two_thirds_in() {
        assert_eq!(renew_at(0, 300), 200);
        assert_eq!(renew_at(1_000, 31_000), 21_000);
        assert_eq!(renew_at(5, 5), 5, "an empty life renews at once");
    }

    #[test]
    fn a_certificate_names_the_nodes_host() {
        assert_eq!(host_of("10.0.0.7"), ["10.0.0.7"]);
        assert_eq!(host_of("10.0.0.7:7071"), ["10.0.0.7"]);
        assert_eq!(host_of("node-a.lab"), ["node-a.lab"]);
        assert!(host_of("0.0.0.0").is_empty());
    }
}
