//! `sched.v1.PkiApi`: certificates for joining nodes and users, their renewal, and the join
//! tokens that admit them.
//!
//! - `JoinWithToken` (no client certificate needed: the token is the credential) checks the
//!   token against the digests in the replicated state, refuses an agent name whose current
//!   certificate is still valid (so one node cannot take over another's tasks by joining under
//!   its name), signs the request's key for the token's role and the given name, and records
//!   the certificate in the state. A server token's answer also carries the CA key.
//! - `RenewCertificate` signs a new key for the caller's own identity; an agent may renew only
//!   its current certificate.
//! - `CreateToken`, `ListTokens`, `RevokeToken` are the admin's (see [`super::authorize`]).
//!
//! Every check happens before anything is proposed: a refused join leaves no trace in the
//! state.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pki::{ClusterCa, Identity, JoinToken, Role};
use proto::sched::v1 as pb;
use proto::sched::v1::pki_api_server::PkiApi;
use tonic::{Request, Response, Status};

use super::{errors, now_ms};
use crate::raft::{Consensus, Proposal};
use crate::state::{Command, HolderCheck};

/// How long an admin's or reader's certificate from a token is valid.
pub const USER_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// A token's lifetime unless `--ttl` says otherwise.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest a token may live.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The names every server certificate carries: the servers' common name and loopback (for tools
/// on the same machine).
pub const SERVER_CERTIFICATE_NAMES: [&str; 4] = [transport::SERVER_NAME, "localhost", "127.0.0.1", "::1"];
/// Extra names (addresses) one certificate may carry.
const MAX_ADDRESSES: usize = 8;

pub struct PkiApiService {
    consensus: Arc<Consensus>,
    ca: Arc<ClusterCa>,
    node_certificate_ttl: Duration,
}

impl PkiApiService {
    pub fn new(consensus: Arc<Consensus>, ca: Arc<ClusterCa>, node_certificate_ttl: Duration) -> PkiApiService {
        PkiApiService { consensus, ca, node_certificate_ttl }
    }

    /// Signs `csr_pem` for `identity`, records the certificate in the state (if the name's
    /// holder is still as `holder` expects), and answers with it.
    async fn issue(
        &self,
        identity: &Identity,
        csr_pem: &str,
        addresses: &[String],
        holder: HolderCheck,
    ) -> Result<pb::IssuedCredentials, Status> {
        let names = certificate_names(identity.role(), addresses)?;
        let validity = match identity.role() {
            Role::Agent | Role::Server => self.node_certificate_ttl,
            Role::Admin | Role::Reader => USER_CERTIFICATE_VALIDITY,
        };
        let issued = self
            .ca
            .issue_for_request(identity, csr_pem, &names, SystemTime::now(), validity)
            .map_err(|e| Status::invalid_argument(format!("`csr_pem`: {e}")))?;
        let command = Command::RecordCertificate {
            role: identity.role(),
            name: identity.name().to_string(),
            serial: issued.serial.clone(),
            not_after_ms: issued.not_after_ms,
            now_ms: now_ms(),
            holder,
        };
        self.consensus.write(Proposal::Command(command)).await.map_err(errors::consensus)?.map_err(errors::rejection)?;
        tracing::info!(holder = %identity, serial = issued.serial, "issued a certificate");
        Ok(pb::IssuedCredentials {
            certificate_pem: issued.certificate_pem,
            ca_pem: self.ca.certificate_pem().to_string(),
            ca_key_pem: if identity.role() == Role::Server { self.ca.key_pem() } else { String::new() },
            not_after_unix_ms: issued.not_after_ms,
            role: identity.role().to_string(),
            name: identity.name().to_string(),
            serial: issued.serial,
        })
    }
}

/// The names a certificate for `role` carries besides its identity: the role's common name
/// (what clients check) and the holder's own addresses (for tools that dial them).
pub fn certificate_names(role: Role, addresses: &[String]) -> Result<Vec<String>, Status> {
    if addresses.len() > MAX_ADDRESSES {
        return Err(Status::invalid_argument(format!("`addresses`: at most {MAX_ADDRESSES}, not {}", addresses.len())));
    }
    let mut names: Vec<String> = match role {
        Role::Server => SERVER_CERTIFICATE_NAMES.iter().map(|n| n.to_string()).collect(),
        Role::Agent => vec![transport::AGENT_NAME.into()],
        Role::Admin | Role::Reader => Vec::new(),
    };
    for address in addresses {
        let ok = !address.is_empty()
            && address.len() <= pki::MAX_NAME_LEN
            && address.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
        if !ok {
            return Err(Status::invalid_argument(format!("`addresses`: {address:?} is not a host name or IP address")));
        }
        if !names.contains(address) {
            names.push(address.clone());
        }
    }
    Ok(names)
}

#[tonic::async_trait]
impl PkiApi for PkiApiService {
    async fn join_with_token(&self, request: Request<pb::JoinWithTokenRequest>) -> Result<Response<pb::IssuedCredentials>, Status> {
        let r = request.into_inner();
        let token: JoinToken = r.token.parse().map_err(|e: pki::TokenError| Status::invalid_argument(e.to_string()))?;
        let fingerprint = self.ca.fingerprint();
        let now = now_ms();
        let (role, holder) = self
            .consensus
            .read(false, |applied| {
                let role = pki::check_token(&token, &fingerprint, &applied.state.token_records(), now);
                let holder = applied
                    .state
                    .certificate_of(Role::Agent, &r.name)
                    .filter(|held| held.not_after_ms > now && !applied.state.is_revoked(&held.serial))
                    .cloned();
                (role, holder)
            })
            .await
            .map_err(errors::consensus)?;
        let role = role.map_err(|e| Status::permission_denied(e.to_string()))?;
        let identity = Identity::new(role, &r.name).map_err(|e| Status::invalid_argument(format!("`name`: {e}")))?;
        if let (Role::Agent, Some(held)) = (role, holder) {
            return Err(Status::already_exists(format!(
                "node name {:?} is held by another certificate (serial {}, valid until {} unix ms): start this agent with \
                 another --name, or remove that node first (`sched node rm {}`)",
                r.name, held.serial, held.not_after_ms, r.name
            )));
        }
        // Nodes hold their name alone: of two joins at once, the log lets one win.
        let holder = if role == Role::Agent { HolderCheck::Vacant } else { HolderCheck::Any };
        Ok(Response::new(self.issue(&identity, &r.csr_pem, &r.addresses, holder).await?))
    }

    async fn renew_certificate(&self, request: Request<pb::RenewCertificateRequest>) -> Result<Response<pb::IssuedCredentials>, Status> {
        let caller =
            transport::caller_of(&request).cloned().ok_or_else(|| Status::unauthenticated("renewing needs the certificate to renew"))?;
        if caller.identity.role() == Role::Agent {
            let name = caller.identity.name().to_string();
            let current = self
                .consensus
                .read(false, |applied| applied.state.certificate_of(Role::Agent, &name).map(|c| c.serial.clone()))
                .await
                .map_err(errors::consensus)?;
            if current.as_deref() != Some(caller.serial.as_str()) {
                return Err(Status::permission_denied(format!(
                    "certificate {} is not node {name:?}'s current one: only the current certificate renews",
                    caller.serial
                )));
            }
        }
        let holder = if caller.identity.role() == Role::Agent { HolderCheck::Current(caller.serial.clone()) } else { HolderCheck::Any };
        let r = request.into_inner();
        Ok(Response::new(self.issue(&caller.identity, &r.csr_pem, &r.addresses, holder).await?))
    }

    async fn create_token(&self, request: Request<pb::CreateTokenRequest>) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let r = request.into_inner();
        let role: Role = r.role.parse().map_err(|e: pki::PkiError| Status::invalid_argument(format!("`role`: {e}")))?;
        let ttl = if r.ttl_seconds == 0 { DEFAULT_TOKEN_TTL } else { Duration::from_secs(r.ttl_seconds) };
        if ttl > MAX_TOKEN_TTL {
            return Err(Status::invalid_argument(format!("`ttl`: at most {} days", MAX_TOKEN_TTL.as_secs() / 86_400)));
        }
        let token = JoinToken::generate(role, self.ca.fingerprint()).map_err(|e| Status::internal(e.to_string()))?;
        let now = now_ms();
        let expires_ms = now.saturating_add(ttl.as_millis() as u64);
        let record = token.record(Some(expires_ms));
        let command =
            Command::AddToken { id: record.id.clone(), role, digest_hex: record.digest_hex(), expires_ms: Some(expires_ms), now_ms: now };
        self.consensus.write(Proposal::Command(command)).await.map_err(errors::consensus)?.map_err(errors::rejection)?;
        tracing::info!(id = record.id, %role, "created a join token");
        Ok(Response::new(pb::CreateTokenResponse { token: token.to_string(), id: record.id, expires_unix_ms: expires_ms }))
    }

    async fn list_tokens(&self, _request: Request<pb::ListTokensRequest>) -> Result<Response<pb::ListTokensResponse>, Status> {
        let now = now_ms();
        let tokens = self
            .consensus
            .read(false, |applied| {
                applied
                    .state
                    .tokens()
                    .filter(|t| !t.expired_at(now))
                    .map(|t| pb::TokenInfo {
                        id: t.id.clone(),
                        role: t.role.to_string(),
                        created_unix_ms: t.created_ms,
                        expires_unix_ms: t.expires_ms.unwrap_or(0),
                    })
                    .collect()
            })
            .await
            .map_err(errors::consensus)?;
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }

    async fn revoke_token(&self, request: Request<pb::RevokeTokenRequest>) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let id = request.into_inner().id;
        let command = Command::RevokeToken { id, now_ms: now_ms() };
        self.consensus.write(Proposal::Command(command)).await.map_err(errors::consensus)?.map_err(errors::rejection)?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_carry_their_roles_name_and_checked_addresses() {
        assert_eq!(certificate_names(Role::Agent, &["10.0.0.7".into()]).unwrap(), ["agent.sched", "10.0.0.7"]);
        assert!(certificate_names(Role::Server, &[]).unwrap().contains(&"server.sched".to_string()));
        assert!(certificate_names(Role::Reader, &[]).unwrap().is_empty());
        for bad in ["", "a b", "x/y", "*.evil"] {
            let err = certificate_names(Role::Agent, &[bad.to_string()]).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
        let many: Vec<String> = (0..9).map(|i| format!("10.0.0.{i}")).collect();
        assert!(certificate_names(Role::Agent, &many).is_err());
    }
}
