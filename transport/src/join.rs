//! Getting credentials from the cluster: joining with a token (a node that has none yet), and
//! renewing a certificate before it expires. The key never leaves this process: only a
//! certificate signing request is sent.

use std::str::FromStr;

use pki::{Identity, JoinToken};
use proto::sched::v1 as pb;
use proto::sched::v1::pki_api_client::PkiApiClient;

use crate::{Credentials, Profile, Security, Transport};

/// Credentials the cluster issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub credentials: Credentials,
    /// The CA key, for a server only (every server issues certificates).
    pub ca_key_pem: Option<String>,
    pub identity: Identity,
    pub serial: String,
    pub not_after_ms: u64,
}

/// Why no credentials were issued.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Token(#[from] pki::TokenError),
    #[error("{0}")]
    Name(pki::PkiError),
    #[error("{0}")]
    Key(pki::PkiError),
    /// A server answered and said no: another server would say the same.
    #[error("{server} refused: {message}")]
    Refused { server: String, message: String },
    #[error("no server could answer:\n  {}", .0.join("\n  "))]
    Unreachable(Vec<String>),
    #[error("the server sent a CA other than the one the token pins: refusing it")]
    WrongCa,
}

/// Exchanges `token` for a certificate named `name` (also valid for `addresses`), asking
/// `servers` in turn. The servers are trusted only if their CA is the one the token pins.
pub async fn join_with_token(servers: &[String], token: &str, name: &str, addresses: &[String]) -> Result<Issued, JoinError> {
    let token = JoinToken::from_str(token)?;
    let identity = Identity::new(token.role, name).map_err(JoinError::Name)?;
    let (key_pem, csr_pem) = pki::key_and_request(&identity).map_err(JoinError::Key)?;
    let transport = Transport::new(Security::Join(token.ca)).map_err(|e| JoinError::Unreachable(vec![e.to_string()]))?;
    let request = pb::JoinWithTokenRequest { token: token.to_string(), name: name.to_string(), csr_pem, addresses: addresses.to_vec() };
    let answer = ask(&transport, servers, |mut client| {
        let request = request.clone();
        async move { client.join_with_token(request).await }
    })
    .await?;
    if pki::Fingerprint::of_pem(&answer.ca_pem).ok() != Some(token.ca) {
        return Err(JoinError::WrongCa);
    }
    issued(answer, key_pem)
}

/// A new certificate for this process's own identity, on a fresh key, from `servers` (over
/// `transport`, which presents the current certificate).
pub async fn renew(transport: &Transport, servers: &[String], identity: &Identity, addresses: &[String]) -> Result<Issued, JoinError> {
    let (key_pem, csr_pem) = pki::key_and_request(identity).map_err(JoinError::Key)?;
    let request = pb::RenewCertificateRequest { csr_pem, addresses: addresses.to_vec() };
    let answer = ask(transport, servers, |mut client| {
        let request = request.clone();
        async move { client.renew_certificate(request).await }
    })
    .await?;
    issued(answer, key_pem)
}

fn issued(answer: pb::IssuedCredentials, key_pem: String) -> Result<Issued, JoinError> {
    let refused = |message: String| JoinError::Refused { server: "the server".into(), message };
    let role = answer.role.parse().map_err(|e: pki::PkiError| refused(e.to_string()))?;
    let identity = Identity::new(role, &answer.name).map_err(|e| refused(e.to_string()))?;
    Ok(Issued {
        credentials: Credentials { ca_pem: answer.ca_pem, certificate_pem: answer.certificate_pem, key_pem },
        ca_key_pem: Some(answer.ca_key_pem).filter(|k| !k.is_empty()),
        identity,
        serial: answer.serial,
        not_after_ms: answer.not_after_unix_ms,
    })
}

/// Runs `call` against each server until one answers; a server that cannot be reached (or has
/// no leader) is skipped, a refusal is final.
async fn ask<F, Fut>(transport: &Transport, servers: &[String], call: F) -> Result<pb::IssuedCredentials, JoinError>
where
    F: Fn(PkiApiClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<pb::IssuedCredentials>, tonic::Status>>,
{
    let mut failures = Vec::new();
    for server in servers {
        let channel = match transport.connect(server, Profile::CLI_CALL).await {
            Ok(channel) => channel,
            Err(e) => {
                failures.push(format!("{server}: cannot connect ({})", error_chain(&e)));
                continue;
            }
        };
        match call(PkiApiClient::new(channel)).await {
            Ok(answer) => return Ok(answer.into_inner()),
            Err(status) if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) => {
                failures.push(format!("{server}: {}", status.message()));
            }
            Err(status) => return Err(JoinError::Refused { server: server.clone(), message: status.message().to_string() }),
        }
    }
    Err(JoinError::Unreachable(failures))
}

/// An error and its sources on one line (a TLS failure hides two levels down).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
