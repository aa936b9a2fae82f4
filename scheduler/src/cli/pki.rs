//! The CLI's PKI commands: join tokens (`sched token`), removing a node (`sched node rm`), a CA
//! for an initial cluster of several servers (`sched ca create`), a user's credentials from a
//! token (`sched login`), and a server joining with a server token (`sched server --join`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::sched::v1 as pb;
use proto::sched::v1::pki_api_client::PkiApiClient;
use proto::sched::v1::service_api_client::ServiceApiClient;

use super::client::Servers;
use super::{CliError, Format, age, print, table};
use crate::credentials_file::CredentialsFile;
use crate::server::cluster_pki;

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a new join token. Agents join with `sched-agent --join TOKEN`, servers with
    /// `sched server --join TOKEN`, users with `sched login TOKEN`.
    Create {
        /// What the token admits: agent, server, reader or admin.
        #[arg(long)]
        role: String,
        /// How long it may be used (e.g. 30m, 24h; at most 8760h).
        #[arg(long, default_value = "24h", value_parser = super::parse_duration)]
        ttl: Duration,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// List the tokens that can still be used (never their secrets).
    List {
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Remove a token by its id: it admits nobody from then on (who joined with it stays).
    Rm { id: String },
}

#[derive(clap::Subcommand, Debug)]
pub enum NodeCommand {
    /// Forget a node: its tasks are placed elsewhere and its certificate is revoked (an agent
    /// with that name must join again with a new token).
    Rm { name: String },
}

#[derive(clap::Subcommand, Debug)]
pub enum CaCommand {
    /// Make a cluster CA in DIR (ca.pem, ca-key.pem mode 0600). Copy DIR to each server of a
    /// new cluster of several and start each with --ca-dir DIR; a lone server needs none.
    Create { dir: PathBuf },
}

#[derive(clap::Subcommand, Debug)]
pub enum CredentialsCommand {
    /// Write the credentials file's CA, certificate and key as PEM files into DIR (ca.pem,
    /// cert.pem, key.pem; mode 0600), for tools that take files: grpcurl -cacert DIR/ca.pem
    /// -cert DIR/cert.pem -key DIR/key.pem.
    Export { dir: PathBuf },
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// A reader or admin token (`sched token create --role reader`).
    pub token: String,
    /// Who you are: the name your certificate carries (the servers log it).
    #[arg(long)]
    pub name: String,
    /// Where to write the credentials file (mode 0600); then `export SCHED_CONFIG=FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub async fn token(servers: Servers, command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create { role, ttl, output } => {
            let request = pb::CreateTokenRequest { role, ttl_seconds: ttl.as_secs().max(1) };
            let created = servers
                .call(|c| {
                    let request = request.clone();
                    async move { PkiApiClient::new(c).create_token(request).await.map(|r| r.into_inner()) }
                })
                .await?;
            match output {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"token": created.token, "id": created.id, "expires_unix_ms": created.expires_unix_ms})
                ),
                Format::Table => {
                    // The token alone on stdout, so `TOKEN=$(sched token create ...)` works.
                    println!("{}", created.token);
                    eprintln!("token {} expires {}; it is shown only now", created.id, age::until(created.expires_unix_ms));
                }
            }
        }
        TokenCommand::List { output } => {
            let tokens = servers
                .call(|c| async move { PkiApiClient::new(c).list_tokens(pb::ListTokensRequest {}).await.map(|r| r.into_inner().tokens) })
                .await?;
            print(
                output,
                || {
                    let rows: Vec<Vec<String>> = tokens
                        .iter()
                        .map(|t| {
                            let expires = if t.expires_unix_ms == 0 { "never".into() } else { age::until(t.expires_unix_ms) };
                            vec![t.id.clone(), t.role.clone(), age::age(t.created_unix_ms), expires]
                        })
                        .collect();
                    table::render(&["ID", "ROLE", "CREATED", "EXPIRES"], &rows)
                },
                || {
                    tokens
                        .iter()
                        .map(|t| {
                            serde_json::json!({"id": t.id, "role": t.role, "created_unix_ms": t.created_unix_ms, "expires_unix_ms": t.expires_unix_ms})
                        })
                        .collect()
                },
            );
        }
        TokenCommand::Rm { id } => {
            let request = pb::RevokeTokenRequest { id: id.clone() };
            servers
                .call(|c| {
                    let request = request.clone();
                    async move { PkiApiClient::new(c).revoke_token(request).await.map(|r| r.into_inner()) }
                })
                .await?;
            println!("token {id} removed");
        }
    }
    Ok(())
}

pub async fn node(servers: Servers, command: NodeCommand) -> Result<(), CliError> {
    match command {
        NodeCommand::Rm { name } => {
            let request = pb::RemoveNodeRequest { name: name.clone() };
            servers
                .call(|c| {
                    let request = request.clone();
                    async move { ServiceApiClient::new(c).remove_node(request).await.map(|r| r.into_inner()) }
                })
                .await?;
            println!("node {name} removed; its certificate is revoked");
        }
    }
    Ok(())
}

pub fn ca(command: CaCommand) -> Result<(), CliError> {
    match command {
        CaCommand::Create { dir } => {
            if dir.join(cluster_pki::CA_CERTIFICATE_FILE).exists() {
                return Err(CliError::BadInput(format!("{} already holds a CA: keep it, or choose another directory", dir.display())));
            }
            let ca = cluster_pki::create_ca().map_err(|e| CliError::BadInput(e.to_string()))?;
            cluster_pki::save_ca(&ca, &dir).map_err(|e| CliError::BadInput(e.to_string()))?;
            println!("cluster CA {} written to {}", ca.fingerprint(), dir.display());
        }
    }
    Ok(())
}

pub fn credentials(file: &CredentialsFile, command: CredentialsCommand) -> Result<(), CliError> {
    match command {
        CredentialsCommand::Export { dir } => {
            file.credentials().save(&dir).map_err(|e| CliError::BadInput(e.to_string()))?;
            println!(
                "wrote {dir}/ca.pem, {dir}/cert.pem and {dir}/key.pem; e.g. grpcurl -cacert {dir}/ca.pem -cert {dir}/cert.pem \
                 -key {dir}/key.pem {server} list",
                dir = dir.display(),
                server = file.servers.first().map_or(super::DEFAULT_ADDRESS, String::as_str),
            );
        }
    }
    Ok(())
}

pub async fn login(args: LoginArgs, servers: Vec<String>) -> Result<(), CliError> {
    let token: pki::JoinToken = args.token.parse().map_err(|e: pki::TokenError| CliError::BadInput(e.to_string()))?;
    if !matches!(token.role, pki::Role::Reader | pki::Role::Admin) {
        return Err(CliError::BadInput(format!("this is a {} token; `sched login` takes a reader or admin token", token.role)));
    }
    let issued = transport::join::join_with_token(&servers, &args.token, &args.name, &[]).await.map_err(join_error)?;
    CredentialsFile::new(servers, issued.credentials).save(&args.out).map_err(|e| CliError::BadInput(e.to_string()))?;
    println!("logged in as {}; use it with: export SCHED_CONFIG={}", issued.identity, args.out.display());
    Ok(())
}

/// `sched server --join TOKEN`: on first start, the CA (key included) from the cluster, kept in
/// `DATA_DIR/pki`; the server issues its own certificate from it. Later starts find it there.
pub async fn join_as_server(token: &str, servers: &[String], id: u64, listen: &str, data_dir: &Path) -> Result<(), CliError> {
    let pki_dir = data_dir.join("pki");
    if cluster_pki::load_ca(&pki_dir).map_err(|e| CliError::BadInput(e.to_string()))?.is_some() {
        tracing::info!("already joined: the CA is in {}", pki_dir.display());
        return Ok(());
    }
    let parsed: pki::JoinToken = token.parse().map_err(|e: pki::TokenError| CliError::BadInput(format!("--join: {e}")))?;
    if parsed.role != pki::Role::Server {
        return Err(CliError::BadInput(format!(
            "--join: this is a {} token; a server joins with a server token (`sched token create --role server`)",
            parsed.role
        )));
    }
    let addresses: Vec<String> = cluster_pki::advertised_host(listen).into_iter().collect();
    let issued = transport::join::join_with_token(servers, token, &id.to_string(), &addresses).await.map_err(join_error)?;
    let key = issued.ca_key_pem.ok_or_else(|| CliError::Rejected("the servers sent no CA key with a server certificate".into()))?;
    let ca = pki::ClusterCa::from_pem(&issued.credentials.ca_pem, &key).map_err(|e| CliError::Rejected(e.to_string()))?;
    cluster_pki::save_ca(&ca, &pki_dir).map_err(|e| CliError::BadInput(e.to_string()))?;
    tracing::info!(ca = %ca.fingerprint(), "joined the cluster: its CA is kept in {}", pki_dir.display());
    Ok(())
}

fn join_error(e: transport::join::JoinError) -> CliError {
    use transport::join::JoinError;
    match e {
        JoinError::Unreachable(_) => CliError::Unreachable(e.to_string()),
        JoinError::Refused { .. } | JoinError::WrongCa => CliError::Rejected(e.to_string()),
        JoinError::Token(_) | JoinError::Name(_) | JoinError::Key(_) => CliError::BadInput(e.to_string()),
    }
}
