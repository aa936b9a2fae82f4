//! Registry authentication against real servers: htpasswd basic auth on docker-registry (right,
//! wrong and missing credentials; credentials from a docker `config.json`) and the bearer-token
//! flow (`WWW-Authenticate: Bearer realm,service,scope` -> token server -> `Authorization:
//! Bearer`), with a token server in front of the registry.
use std::sync::Arc;

use runtime::image::{
    ClientOptions, CredentialStore, Credentials, ImageError, ImageService, ImageServiceOptions, NoProgress, RegistryError,
};
use sched_tests::oci_image::{Entry, ImageDef, OciLayout, PushFormat, push};
use sched_tests::registry::Registry;
use sched_tests::registry_proxy::{ProxyMode, RegistryProxy};

fn service(dir: &std::path::Path, credentials: CredentialStore) -> ImageService {
    let client = ClientOptions { credentials, max_attempts: 2, ..Default::default() };
    ImageService::open(dir, ImageServiceOptions { client, ..Default::default() }).unwrap()
}

fn creds(registry: &str, user: &str, password: &str) -> CredentialStore {
    let mut c = CredentialStore::default();
    c.insert(registry, Credentials::new(user, password));
    c
}

fn layout(dir: &std::path::Path) -> OciLayout {
    let mut layout = OciLayout::create(dir);
    let desc = layout.add_image(&ImageDef::new(vec![vec![Entry::file("secret", "only for alice")]]));
    layout.tag("v1", &desc);
    layout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_accepts_right_credentials_and_refuses_wrong_or_missing() {
    let registry = Registry::start_with_htpasswd("alice", "s3cret");
    let work = tempfile::tempdir().unwrap();
    let layout = layout(&work.path().join("layout"));
    let reference = format!("{}/private/app:v1", registry.addr());
    push(&layout.dir, "v1", &reference, PushFormat::Oci, false, Some("alice:s3cret"));

    let missing = service(&work.path().join("d1"), CredentialStore::default());
    let err = missing.pull(&reference, Arc::new(NoProgress)).await.unwrap_err();
    assert!(matches!(err, ImageError::Registry(RegistryError::Unauthorized { .. })), "{err}");
    assert!(err.to_string().contains("no credentials were given"), "{err}");

    let wrong = service(&work.path().join("d2"), creds(&registry.addr(), "alice", "wrong"));
    let err = wrong.pull(&reference, Arc::new(NoProgress)).await.unwrap_err();
    assert!(matches!(err, ImageError::Registry(RegistryError::Unauthorized { .. })), "{err}");
    assert!(err.to_string().contains("refused the credentials"), "{err}");

    let right = service(&work.path().join("d3"), creds(&registry.addr(), "alice", "s3cret"));
    right.pull(&reference, Arc::new(NoProgress)).await.unwrap();

    // The same credentials from a docker config.json.
    let config = work.path().join("config.json");
    let auth = "YWxpY2U6czNjcmV0"; // base64("alice:s3cret")
    std::fs::write(&config, format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.addr())).unwrap();
    let from_file = service(&work.path().join("d4"), CredentialStore::from_docker_config(&config).unwrap());
    from_file.pull(&reference, Arc::new(NoProgress)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_gets_a_token_for_the_repository_scope() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = layout(&work.path().join("layout"));
    push(&layout.dir, "v1", &format!("{}/org/app:v1", registry.addr()), PushFormat::Oci, false, None);
    let token = "tok-7f3a9c";
    let proxy =
        RegistryProxy::start(&registry.addr(), ProxyMode::Bearer { user: "bob".into(), password: "hunter2".into(), token: token.into() });
    let reference = format!("{}/org/app:v1", proxy.addr());

    let missing = service(&work.path().join("d1"), CredentialStore::default());
    let err = missing.pull(&reference, Arc::new(NoProgress)).await.unwrap_err();
    assert!(matches!(err, ImageError::Registry(RegistryError::Unauthorized { .. })), "{err}");
    assert!(err.to_string().contains("token server"), "{err}");

    let wrong = service(&work.path().join("d2"), creds(&proxy.addr(), "bob", "nope"));
    let err = wrong.pull(&reference, Arc::new(NoProgress)).await.unwrap_err();
    assert!(matches!(err, ImageError::Registry(RegistryError::Unauthorized { .. })) && err.to_string().contains("401"), "{err}");

    let before = proxy.token_queries().len();
    let right = service(&work.path().join("d3"), creds(&proxy.addr(), "bob", "hunter2"));
    let record = right.pull(&reference, Arc::new(NoProgress)).await.unwrap();
    let out = work.path().join("out");
    right.unpack(&reference, &out).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("secret")).unwrap(), "only for alice");
    let queries = proxy.token_queries();
    assert_eq!(queries.len() - before, 1, "one token serves the whole pull: {queries:?}");
    let q = &queries[before];
    assert!(q.contains("service=sched-test"), "{q}");
    assert!(q.contains("scope=repository%3Aorg%2Fapp%3Apull"), "{q}");
    assert_eq!(record.layers.len(), 1);
}
