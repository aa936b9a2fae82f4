//! Image references as docker and podman read them: `busybox`, `library/busybox:1.36`,
//! `ghcr.io/org/app@sha256:...`, `localhost:5000/app:tag`.
//!
//! Normalisation follows docker's: a first path component that contains `.` or `:` or is
//! `localhost` names the registry, otherwise the registry is `docker.io`, and one-component
//! names on docker.io live under `library/`. Without a tag or digest the tag is `latest`. When
//! both a tag and a digest are given the digest decides what is pulled.
use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::RegistryError;

/// The registry that short names resolve to.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves docker.io's registry API.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
const DEFAULT_TAG: &str = "latest";

/// A fully normalised image reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference.
    pub fn parse(input: &str) -> Result<Self, RegistryError> {
        let bad = |reason: &str| RegistryError::InvalidReference { reference: input.to_string(), reason: reason.to_string() };
        if input.is_empty() {
            return Err(bad("it is empty"));
        }
        if input.len() > 255 + 128 + 72 {
            return Err(bad("it is too long"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((name, d)) => (name, Some(Digest::parse(d).map_err(|e| bad(&e.to_string()))?)),
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|r| bad(&r))?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        validate_registry(&registry).map_err(|r| bad(&r))?;
        let repository = if registry == DOCKER_HUB && !repository.contains('/') { format!("library/{repository}") } else { repository };
        validate_repository(&repository).map_err(|r| bad(&r))?;
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Self { registry, repository, tag, digest })
    }

    /// The registry as written in references (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) that serves the registry's HTTP API.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB { DOCKER_HUB_API_HOST } else { &self.registry }
    }

    /// The repository path (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What the manifest endpoint is asked for: the digest if there is one, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The same repository at another digest (used for the platform manifest of an index).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self { digest: Some(digest), ..self.clone() }
    }

    /// The same repository pinned to `digest`, its tag dropped: what is run is named by the
    /// digest alone (`host/repo:1.0` -> `host/repo@sha256:...`).
    pub fn pinned(&self, digest: Digest) -> Self {
        Self { tag: None, digest: Some(digest), ..self.clone() }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

fn validate_registry(registry: &str) -> Result<(), String> {
    let ok = !registry.is_empty() && registry.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if ok { Ok(()) } else { Err(format!("registry {registry:?} is not a valid host[:port]")) }
}

fn validate_repository(repository: &str) -> Result<(), String> {
    if repository.len() > 255 {
        return Err("the repository name is longer than 255 characters".into());
    }
    for component in repository.split('/') {
        let b = component.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let separators_ok = {
            // [a-z0-9]+ ( ( [._] | __ | -+ ) [a-z0-9]+ )*
            let mut i = 0;
            let mut ok = !b.is_empty() && alnum(b[0]) && alnum(b[b.len() - 1]);
            while ok && i < b.len() {
                if alnum(b[i]) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < b.len() && !alnum(b[i]) {
                    i += 1;
                }
                let sep = &component[start..i];
                ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
            }
            ok
        };
        if !separators_ok {
            return Err(format!(
                "repository component {component:?} must be lowercase letters and digits, \
                 separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let ok = !b.is_empty() && b.len() <= 128 && word(b[0]) && b.iter().all(|&c| word(c) || c == b'.' || c == b'-');
    if ok { Ok(()) } else { Err(format!("tag {tag:?} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")) }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn short_names_normalise_to_docker_hub_library() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("library/busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("index.docker.io/library/busybox:1"), "docker.io/library/busybox:1");
        assert_eq!(norm("someone/app"), "docker.io/someone/app:latest");
        assert_eq!(Reference::parse("busybox").unwrap().api_host(), "registry-1.docker.io");
    }

    #[test]
    fn registries_are_recognised_by_dot_colon_or_localhost() {
        let r = Reference::parse("localhost:5000/app:tag").unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("localhost:5000", "app", Some("tag")));
        let r = Reference::parse("localhost/app").unwrap();
        assert_eq!((r.registry(), r.repository()), ("localhost", "app"));
        let r = Reference::parse("127.0.0.1:5000/a/b/c").unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("127.0.0.1:5000", "a/b/c", Some("latest")));
        assert_eq!(r.api_host(), "127.0.0.1:5000");
    }

    #[test]
    fn digest_references_keep_no_default_tag_and_win_over_tags() {
        let r = Reference::parse(&format!("ghcr.io/org/app@{D}")).unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("ghcr.io", "org/app", None));
        assert_eq!(r.manifest_ref(), D);
        let r = Reference::parse(&format!("ghcr.io/org/app:v1@{D}")).unwrap();
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(r.to_string(), format!("ghcr.io/org/app:v1@{D}"));
    }

    #[test]
    fn pinning_replaces_tag_and_digest_with_the_given_digest() {
        let d = Digest::parse(D).unwrap();
        let pinned = |s: &str| Reference::parse(s).unwrap().pinned(d.clone()).to_string();
        assert_eq!(pinned("127.0.0.1:5000/quotes:1.0"), format!("127.0.0.1:5000/quotes@{D}"));
        assert_eq!(pinned("busybox"), format!("docker.io/library/busybox@{D}"));
        let other = format!("sha256:{}", "0".repeat(64));
        assert_eq!(pinned(&format!("ghcr.io/org/app:v1@{other}")), format!("ghcr.io/org/app@{D}"));
    }

    #[test]
    fn invalid_references_are_refused_with_a_reason() {
        for bad in ["", "Busybox", "busybox:", "busybox:-x", "a//b", "app@sha256:123", "a/-b", "a/b_"] {
            let err = Reference::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("invalid image reference"), "{bad}: {err}");
        }
        assert!(Reference::parse(&format!("a:{}", "x".repeat(129))).is_err());
    }

    #[test]
    fn separators_inside_repository_components() {
        for good in ["a.b", "a_b", "a__b", "a---b", "my-org/my.app_x"] {
            Reference::parse(good).expect(good);
        }
        for bad in ["a..b", "a___b", "a._b"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
