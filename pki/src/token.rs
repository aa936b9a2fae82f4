//! Join tokens, after Docker Swarm's: `SCHED1-ROLE-CAFINGERPRINT-SECRET`.
//!
//! The CA fingerprint lets a joining node check the servers before it sends them anything (it
//! has no CA yet: it trusts the certificate chain whose root has that fingerprint). The
//! secret, 32 random bytes, proves the joiner was given the token. The servers keep only its
//! SHA-256 ([`TokenRecord`]): a copy of their state or of their disk does not hand out tokens.

use std::fmt;
use std::str::FromStr;

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::ca::Fingerprint;
use crate::error::{PkiError, TokenError};
use crate::identity::Role;

/// The version prefix every token starts with.
pub const TOKEN_PREFIX: &str = "SCHED1";

/// A join token as the holder has it (the secret in clear).
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub role: Role,
    pub ca: Fingerprint,
    secret: [u8; 32],
}

impl JoinToken {
    /// A new token for `role` in the cluster whose CA has fingerprint `ca`.
    pub fn generate(role: Role, ca: Fingerprint) -> Result<Self, PkiError> {
        let mut secret = [0u8; 32];
        SystemRandom::new().fill(&mut secret).map_err(|_| PkiError::Random)?;
        Ok(JoinToken { role, ca, secret })
    }

    /// What the servers keep of the token: the SHA-256 of its secret.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.secret).into()
    }

    /// A short public name for the token (the first 12 hex digits of its digest): shown by
    /// `sched token list`, used to remove it; it reveals nothing of the secret.
    pub fn id(&self) -> String {
        hex::encode(&self.digest()[..6])
    }

    /// The record the servers keep of this token, valid until `expires_ms` (unix ms) if set.
    pub fn record(&self, expires_ms: Option<u64>) -> TokenRecord {
        TokenRecord { id: self.id(), role: self.role, digest: self.digest(), expires_ms }
    }
}

// The secret never reaches logs through Debug.
impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken").field("role", &self.role).field("ca", &self.ca.to_string()).field("id", &self.id()).finish()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}-{}-{}-{}", self.role, self.ca, hex::encode(self.secret))
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = |what: &str| TokenError::Malformed(what.to_string());
        let parts: Vec<&str> = s.trim().split('-').collect();
        let [prefix, role, ca, secret] = parts.as_slice() else {
            return Err(malformed(&format!("{} parts separated by '-', not 4", parts.len())));
        };
        if *prefix != TOKEN_PREFIX {
            return Err(malformed(&format!("it starts with {prefix:?}, not {TOKEN_PREFIX}")));
        }
        let role: Role = role.parse().map_err(|e: PkiError| malformed(&e.to_string()))?;
        let ca: Fingerprint = ca.parse().map_err(|_| malformed("the CA fingerprint is not 64 hex digits"))?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(secret, &mut bytes).map_err(|_| malformed("the secret is not 64 hex digits"))?;
        Ok(JoinToken { role, ca, secret: bytes })
    }
}

/// What the servers keep of a token they created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub role: Role,
    /// SHA-256 of the secret.
    pub digest: [u8; 32],
    /// Unix milliseconds after which the token is refused; `None`: until removed.
    pub expires_ms: Option<u64>,
}

impl TokenRecord {
    /// The digest as 64 lowercase hex digits, as the servers' replicated state keeps it.
    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }

    /// A record whose digest is written as 64 hex digits ([`TokenRecord::digest_hex`]).
    pub fn from_digest_hex(id: &str, role: Role, digest_hex: &str, expires_ms: Option<u64>) -> Result<Self, TokenError> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(digest_hex, &mut digest)
            .map_err(|_| TokenError::Malformed(format!("the digest of token {id} is not 64 hex digits")))?;
        Ok(TokenRecord { id: id.to_string(), role, digest, expires_ms })
    }
}

/// The role `token` may join as, if this cluster (CA fingerprint `ours`) created it, it is
/// still among `records` and has not expired at `now_ms`.
pub fn check_token(token: &JoinToken, ours: &Fingerprint, records: &[TokenRecord], now_ms: u64) -> Result<Role, TokenError> {
    if token.ca != *ours {
        return Err(TokenError::OtherCluster { token: token.ca.to_string(), ours: ours.to_string() });
    }
    // Comparing digests, not secrets: how long the comparison takes says nothing about the
    // secret.
    let digest = token.digest();
    let id = token.id();
    let record = records.iter().find(|r| r.digest == digest).ok_or_else(|| TokenError::Unknown { id: id.clone() })?;
    if let Some(expired_ms) = record.expires_ms.filter(|end| now_ms >= *end) {
        return Err(TokenError::Expired { id, expired_ms });
    }
    if record.role != token.role {
        return Err(TokenError::RoleMismatch { id, recorded: record.role.to_string(), claimed: token.role.to_string() });
    }
    Ok(record.role)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(byte: u8) -> Fingerprint {
        Fingerprint([byte; 32])
    }

    #[test]
    fn a_token_round_trips_through_its_text_and_hides_its_secret_from_debug() {
        let token = JoinToken::generate(Role::Agent, fingerprint(7)).unwrap();
        let text = token.to_string();
        assert!(text.starts_with(&format!("SCHED1-agent-{}-", "07".repeat(32))), "{text}");
        assert_eq!(text.len(), "SCHED1-agent-".len() + 64 + 1 + 64);
        assert_eq!(text.parse::<JoinToken>().unwrap(), token);
        assert_eq!(format!(" {text}\n").parse::<JoinToken>().unwrap(), token, "pasted with white space");
        let debug = format!("{token:?}");
        assert!(!debug.contains(&text[text.len() - 64..]), "{debug}");
        assert_ne!(JoinToken::generate(Role::Agent, fingerprint(7)).unwrap(), token, "each token has its own secret");
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let good = JoinToken::generate(Role::Server, fingerprint(1)).unwrap().to_string();
        let ca = "01".repeat(32);
        let cases = [
            ("", "1 parts"),
            ("SCHED1-agent-abc", "3 parts"),
            (&good.replacen("SCHED1", "SWMTKN", 1), "starts with \"SWMTKN\""),
            (&good.replacen("server", "root", 1), "unknown role \"root\""),
            (&format!("SCHED1-agent-{}-{}", &ca[..60], "00".repeat(32)), "CA fingerprint is not 64 hex digits"),
            (&format!("SCHED1-agent-{ca}-xyz"), "secret is not 64 hex digits"),
        ];
        for (text, expected) in cases {
            let err = text.parse::<JoinToken>().unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(err.contains("sched token create"), "says what to do: {err}");
        }
    }

    #[test]
    fn the_servers_accept_only_their_own_live_tokens_for_the_role_they_recorded() {
        let ours = fingerprint(1);
        let agent = JoinToken::generate(Role::Agent, ours).unwrap();
        let server = JoinToken::generate(Role::Server, ours).unwrap();
        let records = [agent.record(Some(10_000)), server.record(None)];

        // (token, now_ms, expected)
        let forged_role = JoinToken { role: Role::Server, ..agent.clone() };
        let foreign = JoinToken { ca: fingerprint(2), ..agent.clone() };
        let unknown = JoinToken::generate(Role::Agent, ours).unwrap();
        let cases: [(&JoinToken, u64, Result<Role, TokenError>); 6] = [
            (&agent, 9_999, Ok(Role::Agent)),
            (&server, u64::MAX, Ok(Role::Server)),
            (&agent, 10_000, Err(TokenError::Expired { id: agent.id(), expired_ms: 10_000 })),
            (&forged_role, 0, Err(TokenError::RoleMismatch { id: agent.id(), recorded: "agent".into(), claimed: "server".into() })),
            (&foreign, 0, Err(TokenError::OtherCluster { token: fingerprint(2).to_string(), ours: ours.to_string() })),
            (&unknown, 0, Err(TokenError::Unknown { id: unknown.id() })),
        ];
        for (token, now, expected) in cases {
            assert_eq!(check_token(token, &ours, &records, now), expected, "{token:?} at {now}");
        }
    }

    #[test]
    fn a_record_round_trips_through_its_hex_digest() {
        let record = JoinToken::generate(Role::Agent, fingerprint(4)).unwrap().record(Some(9));
        let hex = record.digest_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(TokenRecord::from_digest_hex(&record.id, record.role, &hex, record.expires_ms).unwrap(), record);
        for bad in ["", "zz", &hex[..62]] {
            assert!(TokenRecord::from_digest_hex("id", Role::Agent, bad, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_record_keeps_no_secret() {
        let token = JoinToken::generate(Role::Reader, fingerprint(3)).unwrap();
        let record = format!("{:?}", token.record(None));
        let text = token.to_string();
        assert!(!record.contains(&text[text.len() - 64..]));
        assert_eq!(token.id().len(), 12);
    }
}
