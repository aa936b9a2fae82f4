//! Who may call which method of a server: one table, checked on every call before any handler
//! runs (by [`transport::AuthorizeLayer`]).
//!
//! | access | methods | who |
//! |---|---|---|
//! | anyone | health, `PkiApi/JoinWithToken` | any TLS client, certificate or not (the token is the credential) |
//! | any certificate | reflection, `PkiApi/RenewCertificate` | every holder of a certificate of this cluster |
//! | read | list, describe, history, logs, routes, members | readers and admins |
//! | read or agent | `RouteApi/WatchRoutes` | readers, admins, and agents (a node's ingress) |
//! | admin | apply, scale, delete, rollback, remove node, membership, tokens | admins |
//! | agent | `agent.v1.AgentApi/*` | agents, each only as its own node (checked in the handlers) |
//! | server | `raft.v1.RaftPeer/*` | servers |
//!
//! Servers may call everything: a follower forwards heartbeats and reads to the leader with
//! its own certificate, after checking the original caller itself. A method missing from the
//! table is refused. A revoked certificate (its node was removed) is refused everywhere, and so
//! is an expired one that an open connection still carries.

use std::sync::Arc;

use pki::Role;
use tonic::Status;
use transport::{Caller, Policy};

use super::now_ms;
use crate::raft::Consensus;

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Any client that completed the TLS handshake, with or without a certificate.
    Anyone,
    /// Any holder of a certificate of this cluster.
    AnyCertificate,
    /// Readers and admins.
    Read,
    /// Readers, admins and agents.
    ReadOrAgent,
    /// Admins.
    Admin,
    /// Agents (as their own node).
    Agent,
    /// Servers only.
    Server,
}

/// The access `method` (a gRPC path) needs; `None` for a method the table does not know.
pub fn access(method: &str) -> Option<Access> {
    let (service, name) = method.strip_prefix('/')?.split_once('/')?;
    Some(match (service, name) {
        ("grpc.health.v1.Health", _) => Access::Anyone,
        ("sched.v1.PkiApi", "JoinWithToken") => Access::Anyone,
        ("grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection", _) => Access::AnyCertificate,
        ("sched.v1.PkiApi", "RenewCertificate") => Access::AnyCertificate,
        ("sched.v1.PkiApi", "CreateToken" | "ListTokens" | "RevokeToken") => Access::Admin,
        ("sched.v1.ServiceApi", "ListServices" | "ListTasks" | "ListNodes" | "DescribeService" | "History") => Access::Read,
        ("sched.v1.ServiceApi", "Apply" | "Scale" | "Delete" | "Rollback" | "RemoveNode") => Access::Admin,
        ("sched.v1.RouteApi", "ListRoutes") => Access::Read,
        ("sched.v1.RouteApi", "WatchRoutes") => Access::ReadOrAgent,
        ("sched.v1.LogApi", "Logs") => Access::Read,
        ("sched.v1.ClusterApi", "Members") => Access::Read,
        ("sched.v1.ClusterApi", "Join" | "Leave") => Access::Admin,
        ("agent.v1.AgentApi", _) => Access::Agent,
        ("raft.v1.RaftPeer", _) => Access::Server,
        _ => return None,
    })
}

/// Whether `role` has `access`.
pub fn allows(access: Access, role: Role) -> bool {
    matches!(
        (access, role),
        (_, Role::Server)
            | (Access::Anyone | Access::AnyCertificate, _)
            | (Access::Read, Role::Reader | Role::Admin)
            | (Access::ReadOrAgent, Role::Reader | Role::Admin | Role::Agent)
            | (Access::Admin, Role::Admin)
            | (Access::Agent, Role::Agent)
    )
}

/// What a role is told it needs.
fn needed(access: Access) -> &'static str {
    match access {
        Access::Anyone | Access::AnyCertificate => "a certificate",
        Access::Read => "the reader or admin role",
        Access::ReadOrAgent => "the reader, admin or agent role",
        Access::Admin => "the admin role (sched run as root on a server uses /etc/sched/admin.toml)",
        Access::Agent => "an agent's certificate",
        Access::Server => "a server's certificate",
    }
}

/// The decision for `caller` on `method` at `now_ms`, given whether its serial is revoked.
pub fn decide(method: &str, caller: Option<&Caller>, revoked: impl Fn(&str) -> bool, now_ms: u64) -> Result<(), Status> {
    let Some(access) = access(method) else {
        return Err(Status::permission_denied(format!("{method} is not a method of this server")));
    };
    if access == Access::Anyone {
        return Ok(());
    }
    let Some(caller) = caller else {
        return Err(Status::unauthenticated(
            "this call needs a client certificate of this cluster: run sched as root on a server's machine \
             (it reads /etc/sched/admin.toml), or point SCHED_CONFIG at a credentials file (`sched login`)",
        ));
    };
    if caller.not_after_ms < now_ms {
        return Err(Status::unauthenticated(format!(
            "the certificate of {} expired at {} (unix ms): agents renew theirs before that; join again with a new token",
            caller.identity, caller.not_after_ms
        )));
    }
    if revoked(&caller.serial) {
        return Err(Status::unauthenticated(format!(
            "the certificate of {} (serial {}) was revoked (its node was removed): join again with a new token \
             (`sched token create --role agent`)",
            caller.identity, caller.serial
        )));
    }
    if !allows(access, caller.identity.role()) {
        return Err(Status::permission_denied(format!("{method} needs {}; this certificate is {}'s", needed(access), caller.identity)));
    }
    Ok(())
}

/// The server's policy: the table above, with revocations read from the replicated state.
pub struct ServerPolicy {
    consensus: Arc<Consensus>,
}

impl ServerPolicy {
    pub fn new(consensus: Arc<Consensus>) -> ServerPolicy {
        ServerPolicy { consensus }
    }
}

impl Policy for ServerPolicy {
    fn check(&self, method: &str, caller: Option<&Caller>) -> Result<(), Status> {
        let state = self.consensus.raft().state();
        decide(method, caller, |serial| state.state.is_revoked(serial), now_ms())
    }
}

/// For an agent's call about `node_name`: refused unless the caller is that node (or a server
/// forwarding).
pub fn check_node(caller: Option<&Caller>, node_name: &str) -> Result<(), Status> {
    match caller {
        // Plaintext (in-process tests): the layer let it through.
        None => Ok(()),
        Some(caller) if caller.identity.role() == Role::Server => Ok(()),
        Some(caller) if caller.identity.role() == Role::Agent && caller.identity.name() == node_name => Ok(()),
        Some(caller) => Err(Status::permission_denied(format!(
            "this certificate is {}'s: it may act only as its own node, not as node {node_name:?}",
            caller.identity
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pki::{CertificateHolder, Identity};

    fn holder(role: Role, name: &str) -> Caller {
        CertificateHolder {
            identity: Identity::new(role, name).unwrap(),
            serial: format!("{role}{name}"),
            not_before_ms: 0,
            not_after_ms: 2_000,
        }
    }

    #[test]
    fn each_method_needs_its_role() {
        use Role::*;
        let table: &[(&str, &[Role], &[Role])] = &[
            ("/sched.v1.ServiceApi/Apply", &[Admin, Server], &[Reader, Agent]),
            ("/sched.v1.ServiceApi/Scale", &[Admin], &[Reader, Agent]),
            ("/sched.v1.ServiceApi/Delete", &[Admin], &[Reader, Agent]),
            ("/sched.v1.ServiceApi/Rollback", &[Admin], &[Reader, Agent]),
            ("/sched.v1.ServiceApi/RemoveNode", &[Admin], &[Reader, Agent]),
            ("/sched.v1.ServiceApi/ListServices", &[Admin, Reader, Server], &[Agent]),
            ("/sched.v1.ServiceApi/DescribeService", &[Admin, Reader], &[Agent]),
            ("/sched.v1.ServiceApi/History", &[Admin, Reader], &[Agent]),
            ("/sched.v1.LogApi/Logs", &[Admin, Reader], &[Agent]),
            ("/sched.v1.RouteApi/WatchRoutes", &[Admin, Reader, Agent], &[]),
            ("/sched.v1.ClusterApi/Join", &[Admin, Server], &[Reader, Agent]),
            ("/sched.v1.ClusterApi/Leave", &[Admin], &[Reader, Agent]),
            ("/sched.v1.ClusterApi/Members", &[Reader], &[Agent]),
            ("/sched.v1.PkiApi/CreateToken", &[Admin], &[Reader, Agent]),
            ("/sched.v1.PkiApi/RenewCertificate", &[Admin, Reader, Agent, Server], &[]),
            ("/agent.v1.AgentApi/Register", &[Agent, Server], &[Admin, Reader]),
            ("/agent.v1.AgentApi/ReportTaskStatus", &[Agent], &[Admin, Reader]),
            ("/raft.v1.RaftPeer/Send", &[Server], &[Admin, Reader, Agent]),
            ("/raft.v1.RaftPeer/Stream", &[Server], &[Admin, Reader, Agent]),
            ("/raft.v1.RaftPeer/Propose", &[Server], &[Admin, Reader, Agent]),
            ("/raft.v1.RaftPeer/ProposeBatch", &[Server], &[Admin, Reader, Agent]),
            ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &[Reader, Agent], &[]),
        ];
        for (method, allowed, refused) in table {
            for role in *allowed {
                assert!(decide(method, Some(&holder(*role, "n")), |_| false, 1_000).is_ok(), "{role} on {method}");
            }
            for role in *refused {
                let status = decide(method, Some(&holder(*role, "n")), |_| false, 1_000).unwrap_err();
                assert_eq!(status.code(), tonic::Code::PermissionDenied, "{role} on {method}");
                assert!(status.message().contains(&format!("{role} n")), "{}", status.message());
            }
            let anonymous = decide(method, None, |_| false, 1_000).unwrap_err();
            assert_eq!(anonymous.code(), tonic::Code::Unauthenticated, "{method}: {}", anonymous.message());
        }
    }

    #[test]
    fn health_and_joining_need_no_certificate_and_unknown_methods_nobody_gets() {
        assert!(decide("/grpc.health.v1.Health/Check", None, |_| false, 0).is_ok());
        assert!(decide("/sched.v1.PkiApi/JoinWithToken", None, |_| false, 0).is_ok());
        for method in ["/sched.v1.ServiceApi/Nope", "/other.Svc/Apply", "nonsense", "/"] {
            let status = decide(method, Some(&holder(Role::Server, "1")), |_| false, 0).unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{method}");
        }
    }

    #[test]
    fn revoked_and_expired_certificates_are_refused_saying_what_to_do() {
        let agent = holder(Role::Agent, "node-1");
        let revoked = decide("/agent.v1.AgentApi/Heartbeat", Some(&agent), |s| s == "agentnode-1", 1_000).unwrap_err();
        assert_eq!(revoked.code(), tonic::Code::Unauthenticated);
        assert!(revoked.message().contains("was revoked") && revoked.message().contains("sched token create"), "{}", revoked.message());
        let expired = decide("/agent.v1.AgentApi/Heartbeat", Some(&agent), |_| false, 3_000).unwrap_err();
        assert!(expired.message().contains("expired"), "{}", expired.message());
    }

    #[test]
    fn an_agent_acts_only_as_its_own_node() {
        assert!(check_node(Some(&holder(Role::Agent, "node-1")), "node-1").is_ok());
        assert!(check_node(Some(&holder(Role::Server, "2")), "node-1").is_ok(), "a server forwarding");
        let other = check_node(Some(&holder(Role::Agent, "node-2")), "node-1").unwrap_err();
        assert_eq!(other.code(), tonic::Code::PermissionDenied);
        assert!(other.message().contains("node-2") && other.message().contains("\"node-1\""), "{}", other.message());
    }
}
