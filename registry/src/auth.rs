//! Registry authentication: credentials (given explicitly or read from a docker-style
//! `config.json`), `WWW-Authenticate` challenges, and the bearer-token request of the token
//! flow that Docker Hub, GHCR and ECR use.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::error::RegistryError;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:***)", self.username)
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self { username: username.into(), password: password.into() }
    }

    /// Parses `user:password`.
    pub fn parse(s: &str) -> Option<Self> {
        s.split_once(':').map(|(u, p)| Self::new(u, p))
    }

    /// The value of an `Authorization: Basic` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// Credentials per registry host, as `docker login` stores them.
#[derive(Debug, Clone, Default)]
pub struct CredentialStore {
    by_registry: HashMap<String, Credentials>,
}

impl CredentialStore {
    /// Adds (or replaces) the credentials for `registry` (`ghcr.io`, `127.0.0.1:5000`).
    pub fn insert(&mut self, registry: &str, creds: Credentials) {
        self.by_registry.insert(normalise_registry_key(registry), creds);
    }

    pub fn get(&self, registry: &str) -> Option<&Credentials> {
        self.by_registry.get(&normalise_registry_key(registry))
    }

    /// The docker config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_docker_config_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    /// Reads the `auths` of a docker-style `config.json`. Credential helpers (`credsStore`,
    /// `credHelpers`) are not run.
    pub fn from_docker_config(path: &Path) -> Result<Self, RegistryError> {
        let bad = |reason: String| RegistryError::Credentials { path: path.to_path_buf(), reason };
        let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        Self::parse_docker_config(&text).map_err(bad)
    }

    fn parse_docker_config(text: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            auths: HashMap<String, Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            auth: Option<String>,
            username: Option<String>,
            password: Option<String>,
            identitytoken: Option<String>,
        }
        let file: File = serde_json::from_slice(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let mut store = Self::default();
        for (key, e) in file.auths {
            let creds = if let Some(auth) = e.auth.filter(|a| !a.is_empty()) {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|err| format!("auths.{key}.auth is not base64: {err}"))?;
                let raw = String::from_utf8(raw).map_err(|_| format!("auths.{key}.auth is not UTF-8"))?;
                Credentials::parse(&raw).ok_or_else(|| format!("auths.{key}.auth is not user:password"))?
            } else if let (Some(u), Some(p)) = (e.username, e.password) {
                Credentials::new(u, p)
            } else if let Some(t) = e.identitytoken {
                Credentials::new("<token>", t)
            } else {
                continue;
            };
            store.insert(&key, creds);
        }
        Ok(store)
    }
}

/// `https://index.docker.io/v1/` and `docker.io` are the same key; schemes and paths are dropped.
fn normalise_registry_key(key: &str) -> String {
    let key = key.trim_start_matches("https://").trim_start_matches("http://");
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic { realm: String },
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

impl Challenge {
    /// Parses `Basic realm="x"` or `Bearer realm="...",service="...",scope="..."`.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
        let params = parse_auth_params(rest);
        let get = |k: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
        if scheme.eq_ignore_ascii_case("basic") {
            Some(Self::Basic { realm: get("realm").unwrap_or_default() })
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Some(Self::Bearer { realm: get("realm")?, service: get("service"), scope: get("scope") })
        } else {
            None
        }
    }
}

/// `k=v` and `k="quoted, \"escaped\""` pairs separated by commas.
fn parse_auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_string();
            }
        }
        out.push((name.trim().to_string(), value));
    }
    out
}

/// The body of a token server's answer (`token` per Docker, `access_token` per OAuth2).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub token: Option<String>,
    pub access_token: Option<String>,
}

impl TokenResponse {
    pub fn into_token(self) -> Option<String> {
        self.token.or(self.access_token).filter(|t| !t.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_quoted_commas_and_escapes() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#;
        assert_eq!(
            Challenge::parse(h),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            })
        );
        let h = r#"bearer  realm="http://x/t\"q", service=plain"#;
        assert_eq!(
            Challenge::parse(h),
            Some(Challenge::Bearer { realm: "http://x/t\"q".into(), service: Some("plain".into()), scope: None })
        );
    }

    #[test]
    fn basic_and_unknown_challenges() {
        assert_eq!(Challenge::parse(r#"Basic realm="lab-realm""#), Some(Challenge::Basic { realm: "lab-realm".into() }));
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(Challenge::parse(r#"Bearer service="x""#), None, "a bearer challenge needs a realm");
    }

    #[test]
    fn docker_config_auths_in_every_spelling() {
        let text = br#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"YWxpY2U6czNjcmV0"},
            "ghcr.io":{"username":"bob","password":"pw:with:colons"},
            "127.0.0.1:5000":{"auth":"Ym9iOnB3OndpdGg6Y29sb25z"},
            "empty.io":{}
        },"credsStore":"desktop"}"#;
        let store = CredentialStore::parse_docker_config(text).unwrap();
        assert_eq!(store.get("docker.io"), Some(&Credentials::new("alice", "s3cret")));
        assert_eq!(store.get("ghcr.io"), Some(&Credentials::new("bob", "pw:with:colons")));
        assert_eq!(store.get("127.0.0.1:5000"), Some(&Credentials::new("bob", "pw:with:colons")));
        assert_eq!(store.get("empty.io"), None);
        assert!(CredentialStore::parse_docker_config(br#"{"auths":{"x":{"auth":"!!"}}}"#).is_err());
    }

    #[test]
    fn basic_header_is_base64_of_user_colon_password() {
        assert_eq!(Credentials::new("alice", "s3cret").basic_header(), "Basic YWxpY2U6czNjcmV0");
        assert!(!format!("{:?}", Credentials::new("a", "secret")).contains("secret"));
    }
}
