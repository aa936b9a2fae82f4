//! Who holds a certificate: a role and a name, as the URI `sched://ROLE/NAME` in the
//! certificate's subject alternative names.

use std::fmt;
use std::str::FromStr;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::PkiError;

/// Longest name an identity carries (a node name, a server id, a user's name).
pub const MAX_NAME_LEN: usize = 253;

const URI_SCHEME: &str = "sched://";

/// What a certificate's holder may do. Serialized (in the servers' replicated state) as its
/// lowercase name, the same as [`Role::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything the API offers.
    Admin,
    /// get, describe, history and logs.
    Reader,
    /// An agent: register, heartbeat, report and watch as its own node only.
    Agent,
    /// A server: the Raft peer service and the agents' log API.
    Server,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Reader, Role::Agent, Role::Server];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reader => "reader",
            Role::Agent => "agent",
            Role::Server => "server",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| PkiError::Identity(format!("unknown role {s:?}: use admin, reader, agent or server")))
    }
}

/// A certificate holder: its role and its name (a node's name for an agent, a server's id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    role: Role,
    name: String,
}

impl Identity {
    /// An identity, if `name` is 1 to [`MAX_NAME_LEN`] printable ASCII characters without spaces
    /// or '/' (the rule node names follow).
    pub fn new(role: Role, name: &str) -> Result<Self, PkiError> {
        let ok = !name.is_empty() && name.len() <= MAX_NAME_LEN && name.chars().all(|c| c.is_ascii_graphic() && c != '/');
        if !ok {
            return Err(PkiError::Identity(format!(
                "name {name:?} is not allowed: use 1-{MAX_NAME_LEN} printable characters without spaces or '/'"
            )));
        }
        Ok(Identity { role, name: name.to_string() })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `sched://ROLE/NAME`, as the certificate carries it.
    pub fn uri(&self) -> String {
        format!("{URI_SCHEME}{}/{}", self.role, self.name)
    }

    /// The identity in a `sched://ROLE/NAME` URI.
    pub fn from_uri(uri: &str) -> Result<Self, PkiError> {
        let rest = uri.strip_prefix(URI_SCHEME).ok_or_else(|| PkiError::Identity(format!("{uri:?} does not start with {URI_SCHEME}")))?;
        let (role, name) = rest.split_once('/').ok_or_else(|| PkiError::Identity(format!("{uri:?} has no name after the role")))?;
        Identity::new(role.parse()?, name)
    }

    /// The identity a certificate (DER) names: its one `sched://` URI. A certificate with none,
    /// or with two (which would let one certificate act as two holders), names nobody.
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, PkiError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Certificate(format!("cannot parse it: {e}")))?;
        let names = cert
            .subject_alternative_name()
            .map_err(|e| PkiError::Certificate(format!("bad subject alternative names: {e}")))?
            .map(|ext| ext.value.general_names.clone())
            .unwrap_or_default();
        let uris: Vec<&str> = names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(uri) if uri.starts_with(URI_SCHEME) => Some(*uri),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [uri] => Identity::from_uri(uri),
            [] => Err(PkiError::Identity("the certificate names no sched:// identity".into())),
            _ => Err(PkiError::Identity(format!("the certificate names {} identities: {uris:?}", uris.len()))),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_uri() {
        for (role, name) in [(Role::Agent, "node-1"), (Role::Server, "3"), (Role::Admin, "root@host"), (Role::Reader, "ci.bot_2")] {
            let id = Identity::new(role, name).unwrap();
            assert_eq!(Identity::from_uri(&id.uri()).unwrap(), id, "{}", id.uri());
        }
        assert_eq!(Identity::new(Role::Agent, "node1").unwrap().uri(), "sched://agent/node1");
    }

    #[test]
    fn roles_serialize_as_their_names() {
        for role in Role::ALL {
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), role);
        }
        assert!(serde_json::from_str::<Role>("\"root\"").is_err());
    }

    #[test]
    fn bad_names_roles_and_uris_are_refused_with_what_is_wrong() {
        for name in ["", "a b", "a/b", "naïve", &"x".repeat(MAX_NAME_LEN + 1)] {
            let err = Identity::new(Role::Agent, name).unwrap_err().to_string();
            assert!(err.contains("is not allowed"), "{name:?}: {err}");
        }
        let cases = [
            ("https://agent/n", "does not start with sched://"),
            ("sched://agent", "no name after the role"),
            ("sched://root/n", "unknown role \"root\""),
            ("sched://agent/a/b", "is not allowed"),
        ];
        for (uri, expected) in cases {
            let err = Identity::from_uri(uri).unwrap_err().to_string();
            assert!(err.contains(expected), "{uri}: {err}");
        }
    }
}
