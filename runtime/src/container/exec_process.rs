//! The process `exec` runs: a JSON process spec from a file (runc's `exec --process FILE`), or
//! the container's own process changed the way runc's `exec` flags change it ([`ExecChanges`]).
//! Errors name the flag at fault, since that is what the user typed.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capabilities, Capability, Process};

use super::Container;
use crate::error::{Error, Result};

/// Changes to the container's own process for `exec`, one field per runc flag.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecChanges {
    /// The command and its arguments (required).
    pub args: Vec<String>,
    /// `KEY=VALUE` entries (`-e`); each replaces the container's entry of the same key.
    pub env: Vec<String>,
    /// The working directory (`--cwd`), else the container's.
    pub cwd: Option<PathBuf>,
    /// Allocate a terminal (`-t`).
    pub terminal: bool,
    /// `UID[:GID]` (`-u`; the gid defaults to 0), else the container's user.
    pub user: Option<String>,
    /// Additional group ids (`-g`), else the container's.
    pub additional_gids: Vec<u32>,
    /// Capability names (`--cap CAP_NET_ADMIN`) added to the bounding, effective and permitted
    /// sets.
    pub capabilities: Vec<String>,
    /// Set no_new_privs (`--no-new-privs`); off keeps the container's setting.
    pub no_new_privileges: bool,
}

/// Reads a process spec (OCI `process`, as JSON) for `exec --process FILE`.
pub fn read_process(path: &Path) -> Result<Process> {
    // The I/O error goes into the message, not a source: the CLI prints sources too.
    let text = std::fs::read(path).map_err(|e| Error::ExecRequest(format!("read --process {}: {e}", path.display())))?;
    serde_json::from_slice(&text).map_err(|e| Error::ExecRequest(format!("parse --process {}: {e}", path.display())))
}

impl Container {
    /// The container's own process ([`Container::base_process`]) with `changes` applied.
    pub fn exec_process(&self, changes: &ExecChanges) -> Result<Process> {
        if changes.args.is_empty() {
            return Err(Error::ExecRequest("exec needs a command after the container id (or --process FILE)".into()));
        }
        changes.apply(self.base_process()?)
    }
}

impl ExecChanges {
    /// `process` with these changes applied.
    pub fn apply(&self, mut p: Process) -> Result<Process> {
        p.set_args(Some(self.args.clone()));
        p.set_terminal(Some(self.terminal));
        let mut env = p.env().clone().unwrap_or_default();
        for kv in &self.env {
            let key = kv.split('=').next().unwrap_or(kv);
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        p.set_env(Some(env));
        if let Some(cwd) = &self.cwd {
            p.set_cwd(cwd.clone());
        }
        let mut user = p.user().clone();
        if let Some(spec) = &self.user {
            let (uid, gid) = spec.split_once(':').unwrap_or((spec, "0"));
            let number = |text: &str, what: &str| {
                text.parse().map_err(|e| Error::ExecRequest(format!("--user {spec}: {what} must be a number: {e}")))
            };
            user.set_uid(number(uid, "UID")?);
            user.set_gid(number(gid, "GID")?);
        }
        if !self.additional_gids.is_empty() {
            user.set_additional_gids(Some(self.additional_gids.clone()));
        }
        p.set_user(user);
        if self.no_new_privileges {
            p.set_no_new_privileges(Some(true));
        }
        if !self.capabilities.is_empty() {
            let mut caps = p.capabilities().clone().unwrap_or_default();
            for name in &self.capabilities {
                let cap: Capability = serde_json::from_value(serde_json::Value::String(name.clone()))
                    .map_err(|e| Error::ExecRequest(format!("--cap {name}: not a capability name like CAP_NET_ADMIN: {e}")))?;
                let with = |set: &Option<Capabilities>| {
                    let mut set = set.clone().unwrap_or_default();
                    set.insert(cap);
                    Some(set)
                };
                let (b, e, p) = (with(caps.bounding()), with(caps.effective()), with(caps.permitted()));
                caps.set_bounding(b).set_effective(e).set_permitted(p);
            }
            p.set_capabilities(Some(caps));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Process {
        let mut p = Process::default();
        p.set_env(Some(vec!["PATH=/bin".into(), "MODE=base".into()]));
        p
    }

    #[test]
    fn flags_change_args_env_user_and_capabilities() {
        let changes = ExecChanges {
            args: vec!["id".into()],
            env: vec!["MODE=exec".into(), "EXTRA=1".into()],
            cwd: Some("/srv".into()),
            user: Some("1000".into()),
            additional_gids: vec![5],
            capabilities: vec!["CAP_NET_ADMIN".into()],
            no_new_privileges: true,
            ..Default::default()
        };
        let p = changes.apply(base()).unwrap();
        assert_eq!(p.args().as_deref(), Some(&["id".to_string()][..]));
        assert_eq!(p.env().as_deref(), Some(&["PATH=/bin".to_string(), "MODE=exec".into(), "EXTRA=1".into()][..]));
        assert_eq!(p.cwd(), Path::new("/srv"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 0), "the gid defaults to 0");
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[5][..]));
        assert_eq!(p.no_new_privileges(), Some(true));
        let caps = p.capabilities().as_ref().unwrap();
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            assert!(set.as_ref().unwrap().contains(&Capability::NetAdmin));
        }
    }

    #[test]
    fn a_bad_flag_is_named_in_the_error() {
        let user = ExecChanges { args: vec!["id".into()], user: Some("app:1".into()), ..Default::default() };
        let err = user.apply(base()).unwrap_err().to_string();
        assert!(err.starts_with("--user app:1: UID must be a number: "), "{err}");
        let cap = ExecChanges { args: vec!["id".into()], capabilities: vec!["CAP_NOPE".into()], ..Default::default() };
        let err = cap.apply(base()).unwrap_err().to_string();
        assert!(err.starts_with("--cap CAP_NOPE: not a capability name like CAP_NET_ADMIN: "), "{err}");
    }
}
