//! What the servers agree on about the cluster's credentials (issue 13, docs/security.md):
//! the join tokens that exist, the current certificate of each holder, and the serials
//! revoked before their end.
//!
//! - A token is kept as the SHA-256 of its secret ([`TokenEntry`], from
//!   [`pki::JoinToken::record`]): a copy of the state or of a server's disk hands out no token.
//!   [`super::ClusterState::token_records`] is what [`pki::check_token`] reads.
//! - Each (role, name) has at most one current certificate ([`CertificateEntry`]): a name is
//!   held while its certificate lives, and a renewal replaces the entry (the replaced
//!   certificate is not revoked; it expires on its own).
//! - A revoked serial is kept with its certificate's end: until then the TLS layer refuses it,
//!   after it the certificate is refused as expired anyway.
//!
//! Nothing here reads a clock: every command carries its `now_ms`, and whatever has expired by
//! then (tokens, certificate entries, revoked serials) is forgotten when a command of this part
//! of the state is applied, so every server forgets the same entries at the same log index.

use std::collections::BTreeMap;

use pki::Role;
use serde::{Deserialize, Serialize};

use super::{HolderCheck, Outcome, Rejection, RejectionKind, not_found};

/// A join token as the servers keep it: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Its public id (the first 12 hex digits of the digest), what listing and revoking name.
    pub id: String,
    /// The role it joins as.
    pub role: Role,
    /// SHA-256 of the secret, 64 lowercase hex digits.
    pub digest_hex: String,
    pub created_ms: u64,
    /// Unix milliseconds from which the token is refused; `None`: until revoked.
    pub expires_ms: Option<u64>,
}

impl TokenEntry {
    /// Whether the token is refused at `now_ms` (the rule of [`pki::check_token`]).
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|end| now_ms >= end)
    }
}

/// The current certificate of one holder (a role and a name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateEntry {
    /// Lowercase hex, as [`pki::Issued::serial`].
    pub serial: String,
    /// The end of its validity, unix milliseconds.
    pub not_after_ms: u64,
    /// When it was recorded (the command's `now_ms`).
    pub issued_ms: u64,
}

/// The credentials part of the cluster state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Credentials {
    /// By id.
    #[serde(default)]
    tokens: BTreeMap<String, TokenEntry>,
    /// Role -> holder name -> its current certificate.
    #[serde(default)]
    certificates: BTreeMap<Role, BTreeMap<String, CertificateEntry>>,
    /// Revoked serial -> the end of its certificate's validity (unix ms).
    #[serde(default)]
    revoked: BTreeMap<String, u64>,
}

impl Credentials {
    pub(super) fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.certificates.is_empty() && self.revoked.is_empty()
    }

    pub(super) fn tokens(&self) -> impl Iterator<Item = &TokenEntry> {
        self.tokens.values()
    }

    pub(super) fn token(&self, id: &str) -> Option<&TokenEntry> {
        self.tokens.get(id)
    }

    pub(super) fn certificate_of(&self, role: Role, name: &str) -> Option<&CertificateEntry> {
        self.certificates.get(&role).and_then(|by_name| by_name.get(name))
    }

    pub(super) fn is_revoked(&self, serial: &str) -> bool {
        self.revoked.contains_key(serial)
    }

    pub(super) fn revoked_serials(&self) -> impl Iterator<Item = &str> {
        self.revoked.keys().map(String::as_str)
    }

    /// Tokens that still join someone at `now_ms` (what the limit counts).
    pub(super) fn live_tokens(&self, now_ms: u64) -> usize {
        self.tokens.values().filter(|t| !t.expired_at(now_ms)).count()
    }

    /// Certificate entries that are still valid at `now_ms`.
    pub(super) fn live_certificates(&self, now_ms: u64) -> usize {
        self.certificates.values().flat_map(BTreeMap::values).filter(|c| c.not_after_ms >= now_ms).count()
    }

    /// Revoked serials whose certificates are still valid at `now_ms`.
    pub(super) fn live_revoked(&self, now_ms: u64) -> usize {
        self.revoked.values().filter(|not_after| **not_after >= now_ms).count()
    }

    /// Forgets what has expired by `now_ms`: tokens, certificate entries (their names are free
    /// again) and revoked serials.
    fn prune(&mut self, now_ms: u64) {
        self.tokens.retain(|_, t| !t.expired_at(now_ms));
        for by_name in self.certificates.values_mut() {
            by_name.retain(|_, c| c.not_after_ms >= now_ms);
        }
        self.certificates.retain(|_, by_name| !by_name.is_empty());
        self.revoked.retain(|_, not_after| *not_after >= now_ms);
    }

    /// Adds a token (the checks of `limits` passed: a well-formed digest, room for it).
    pub(super) fn add_token(&mut self, token: TokenEntry, now_ms: u64) -> Result<Outcome, Rejection> {
        if self.tokens.contains_key(&token.id) {
            return Err(Rejection { kind: RejectionKind::Conflict, message: format!("a token with id {} exists already", token.id) });
        }
        self.prune(now_ms);
        self.tokens.insert(token.id.clone(), token);
        Ok(Outcome::Done)
    }

    pub(super) fn revoke_token(&mut self, id: &str, now_ms: u64) -> Result<Outcome, Rejection> {
        if self.tokens.remove(id).is_none() {
            return Err(not_found(format!("no token {id}: `sched token list` shows the ones that exist")));
        }
        self.prune(now_ms);
        Ok(Outcome::Done)
    }

    /// Makes `entry` the current certificate of (`role`, `name`), replacing the one before.
    pub(super) fn record_certificate(
        &mut self,
        role: Role,
        name: String,
        entry: CertificateEntry,
        holder: &HolderCheck,
        now_ms: u64,
    ) -> Result<Outcome, Rejection> {
        if self.revoked.contains_key(&entry.serial) {
            return Err(Rejection {
                kind: RejectionKind::Conflict,
                message: format!("certificate {} is revoked: it cannot be recorded for {role} {name}", entry.serial),
            });
        }
        let current = self
            .certificates
            .get(&role)
            .and_then(|by_name| by_name.get(&name))
            .filter(|held| held.not_after_ms > now_ms && !self.revoked.contains_key(&held.serial));
        let conflict = match (holder, current) {
            (HolderCheck::Any, _) | (HolderCheck::Vacant, None) => None,
            (HolderCheck::Vacant, Some(held)) => Some(format!("{role} {name} is held by certificate {}", held.serial)),
            (HolderCheck::Current(expected), Some(held)) if *expected == held.serial => None,
            (HolderCheck::Current(expected), held) => Some(format!(
                "certificate {expected} is not {role} {name}'s current one ({})",
                held.map_or_else(|| "it has none".to_string(), |h| format!("that is {}", h.serial))
            )),
        };
        if let Some(message) = conflict {
            return Err(Rejection { kind: RejectionKind::Conflict, message });
        }
        self.prune(now_ms);
        self.certificates.entry(role).or_default().insert(name, entry);
        Ok(Outcome::Done)
    }

    /// Revokes `serial` until `not_after_ms`. A holder whose current certificate it is no longer
    /// holds its name. Revoking a certificate that has already ended keeps nothing.
    pub(super) fn revoke_certificate(&mut self, serial: String, not_after_ms: u64, now_ms: u64) -> Result<Outcome, Rejection> {
        for by_name in self.certificates.values_mut() {
            by_name.retain(|_, c| c.serial != serial);
        }
        self.certificates.retain(|_, by_name| !by_name.is_empty());
        let end = self.revoked.get(&serial).map_or(not_after_ms, |known| (*known).max(not_after_ms));
        self.revoked.insert(serial, end);
        self.prune(now_ms);
        Ok(Outcome::Done)
    }

    /// Revokes the current certificate of agent `name`, if it has one, and frees the name.
    pub(super) fn revoke_agent(&mut self, name: &str, now_ms: u64) {
        let entry = self.certificates.get_mut(&Role::Agent).and_then(|by_name| by_name.remove(name));
        self.certificates.retain(|_, by_name| !by_name.is_empty());
        if let Some(entry) = entry {
            self.revoked.insert(entry.serial, entry.not_after_ms);
        }
        self.prune(now_ms);
    }
}

#[cfg(test)]
impl Credentials {
    /// `certificates` agent certificates (`agent-0`...) and `revoked` revoked serials, all valid
    /// until `not_after_ms`: a state at its limits without tens of thousands of commands.
    pub(super) fn filled(certificates: usize, revoked: usize, not_after_ms: u64) -> Credentials {
        let entry = |i: usize| CertificateEntry { serial: format!("{i:x}"), not_after_ms, issued_ms: 0 };
        let agents = (0..certificates).map(|i| (format!("agent-{i}"), entry(i))).collect();
        Credentials {
            tokens: BTreeMap::new(),
            certificates: [(Role::Agent, agents)].into(),
            revoked: (0..revoked).map(|i| (format!("ff{i:x}"), not_after_ms)).collect(),
        }
    }
}
