//! Pinning a service's image at apply time: the server that takes an apply asks the registry
//! which manifest the tag points at now, and the new revision records that digest, so every
//! task of the revision runs the same image even if the tag moves later (tasks pull
//! `repo@sha256:...`). For a multi-platform image the index's digest is recorded: it pins every
//! platform, and each node picks its own from it.
//!
//! A reference that already carries a digest is used as it is, without asking the registry.
//! When the registry cannot be asked (unreachable, unknown tag, refused credentials, no answer
//! within [`RESOLVE_TIMEOUT`]) the apply is still accepted, as Docker Swarm does: the revision
//! keeps the tag with an empty digest, its tasks pull by tag, and the reason goes into the
//! service's events. Applying again once the registry answers pins the tag.
//!
//! Registries are spoken to over HTTPS, except loopback ones and those given with
//! `--insecure-registry HOST:PORT` (plain HTTP). Credentials come from docker's `config.json`
//! as for `sched-runtime image pull` (`--docker-config`, else `$DOCKER_CONFIG/config.json`,
//! else `~/.docker/config.json`); registries without an entry are asked anonymously, with the
//! bearer-token flow when they challenge for it.

use std::path::PathBuf;
use std::time::Duration;

use registry::{ClientOptions, CredentialStore, Digest, Reference, RegistryClient, RegistryError};

/// How long an apply waits for the registry before it goes ahead with the tag alone.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the servers reach registries to resolve tags.
#[derive(Clone, Debug, Default)]
pub struct RegistryAccess {
    /// Registries (HOST:PORT or HOST) spoken to over plain HTTP; loopback ones always are.
    pub insecure_registries: Vec<String>,
    /// A docker `config.json` with registry credentials; `None`: docker's default place, if
    /// there is a file there.
    pub docker_config: Option<PathBuf>,
}

/// What an apply learned about its image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The digest the revision pins (from the reference itself, or from the registry).
    Pinned(Digest),
    /// The registry could not tell; tasks will pull by tag. The reason is for the event log.
    Unresolved { reason: String },
}

/// Resolves image tags to digests; one per server, sharing connections and bearer tokens.
pub struct ImagePinner {
    client: RegistryClient,
    timeout: Duration,
}

impl ImagePinner {
    /// A pinner for `access`. Reading an explicitly given credentials file must succeed; a
    /// broken file in docker's default place is skipped with a warning (anonymous access).
    pub fn new(access: &RegistryAccess) -> Result<ImagePinner, RegistryError> {
        let credentials = match &access.docker_config {
            Some(path) => CredentialStore::from_docker_config(path)?,
            None => match CredentialStore::default_docker_config_path().filter(|p| p.is_file()) {
                Some(path) => CredentialStore::from_docker_config(&path).unwrap_or_else(|e| {
                    tracing::warn!("{e}; registries will be asked anonymously");
                    CredentialStore::default()
                }),
                None => CredentialStore::default(),
            },
        };
        Self::with_credentials(access.insecure_registries.clone(), credentials, RESOLVE_TIMEOUT)
    }

    /// A pinner with explicit credentials and time limit.
    pub fn with_credentials(
        insecure_registries: Vec<String>,
        credentials: CredentialStore,
        timeout: Duration,
    ) -> Result<ImagePinner, RegistryError> {
        // One attempt: an apply should not wait out a flapping registry's backoff; applying
        // again pins the tag once the registry answers.
        let options = ClientOptions { insecure_registries, credentials, max_attempts: 1, ..ClientOptions::default() };
        Ok(ImagePinner { client: RegistryClient::new(options)?, timeout })
    }

    /// Resolves `reference` (already parsed: an unparsable image is the caller's rejection).
    pub async fn resolve(&self, reference: &Reference) -> Resolution {
        if let Some(digest) = reference.digest() {
            return Resolution::Pinned(digest.clone());
        }
        match tokio::time::timeout(self.timeout, self.client.resolve_digest(reference)).await {
            Ok(Ok(digest)) => Resolution::Pinned(digest),
            Ok(Err(e)) => Resolution::Unresolved { reason: failure_reason(reference, &e) },
            Err(_) => {
                Resolution::Unresolved { reason: format!("registry {} did not answer within {:?}", reference.registry(), self.timeout) }
            }
        }
    }
}

/// Why a tag could not be resolved, in words for the event log.
fn failure_reason(reference: &Reference, e: &RegistryError) -> String {
    match e {
        RegistryError::Status { status: 404, .. } => format!(
            "registry {} has no manifest {}:{} (HTTP 404): push it, or fix the image name",
            reference.registry(),
            reference.repository(),
            reference.manifest_ref()
        ),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn pinner(timeout: Duration) -> ImagePinner {
        ImagePinner::with_credentials(Vec::new(), CredentialStore::default(), timeout).unwrap()
    }

    #[tokio::test]
    async fn a_digest_in_the_reference_is_used_without_asking_the_registry() {
        // Nothing listens on port 1: a request would fail, so a pinned answer proves none is made.
        let reference = Reference::parse(&format!("127.0.0.1:1/app:1.0@{D}")).unwrap();
        assert_eq!(pinner(RESOLVE_TIMEOUT).resolve(&reference).await, Resolution::Pinned(Digest::parse(D).unwrap()));
    }

    #[tokio::test]
    async fn a_closed_loopback_port_leaves_the_tag_unresolved_at_once_with_the_reason() {
        let reference = Reference::parse("127.0.0.1:1/app:1.0").unwrap();
        let started = std::time::Instant::now();
        let Resolution::Unresolved { reason } = pinner(RESOLVE_TIMEOUT).resolve(&reference).await else {
            panic!("nothing listens on port 1");
        };
        assert!(reason.contains("127.0.0.1:1") && reason.contains("refused"), "{reason}");
        assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_registry_that_never_answers_is_given_up_after_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // Accepts and holds connections without answering.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let reference = Reference::parse(&format!("{address}/app:1.0")).unwrap();
        let resolution = pinner(Duration::from_millis(300)).resolve(&reference).await;
        silent.abort();
        assert_eq!(resolution, Resolution::Unresolved { reason: format!("registry {address} did not answer within 300ms") });
    }

    #[test]
    fn insecure_registries_from_the_flag_are_spoken_to_over_plain_http() {
        let access = RegistryAccess { insecure_registries: vec!["10.200.1.1:5000".into()], docker_config: None };
        let pinner = ImagePinner::new(&access).unwrap();
        assert!(pinner.client.is_insecure("10.200.1.1:5000"), "a lab registry on a bridge address");
        assert!(pinner.client.is_insecure("127.0.0.1:5000"), "loopback always");
        assert!(!pinner.client.is_insecure("10.200.1.1:5001") && !pinner.client.is_insecure("ghcr.io"));
    }

    #[test]
    fn an_explicit_credentials_file_must_be_readable() {
        let access = RegistryAccess { insecure_registries: vec![], docker_config: Some("/nonexistent/config.json".into()) };
        let err = ImagePinner::new(&access).err().expect("a missing --docker-config is an error");
        assert!(err.to_string().contains("/nonexistent/config.json"), "{err}");
    }

    #[test]
    fn an_unknown_tag_is_explained() {
        let reference = Reference::parse("127.0.0.1:5000/team/app:2.0").unwrap();
        let e = RegistryError::Status {
            registry: "127.0.0.1:5000".into(),
            method: "HEAD".into(),
            url: "http://127.0.0.1:5000/v2/team/app/manifests/2.0".into(),
            status: 404,
            body: String::new(),
        };
        assert_eq!(
            failure_reason(&reference, &e),
            "registry 127.0.0.1:5000 has no manifest team/app:2.0 (HTTP 404): push it, or fix the image name"
        );
    }
}
