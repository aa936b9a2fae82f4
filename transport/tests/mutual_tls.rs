//! Real TLS on loopback: a tonic server behind `Transport::incoming` and an `AuthorizeLayer`,
//! and clients of each kind: with a certificate, without one, plaintext, of another CA,
//! joining with the right and the wrong pin.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pki::{ClusterCa, Identity, Role};
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use transport::{Caller, Credentials, Policy, Profile, SERVER_NAME, Security, Transport};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn credentials(ca: &ClusterCa, role: Role, name: &str, names: &[&str]) -> Credentials {
    let identity = Identity::new(role, name).unwrap();
    let (key_pem, request_pem) = pki::key_and_request(&identity).unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let issued = ca.issue_for_request(&identity, &request_pem, &names, SystemTime::now(), DAY).unwrap();
    Credentials { ca_pem: ca.certificate_pem().to_string(), certificate_pem: issued.certificate_pem, key_pem }
}

/// Admins only; records every caller it is asked about.
#[derive(Default)]
struct AdminsOnly {
    seen: Mutex<Vec<Option<Caller>>>,
}

impl Policy for AdminsOnly {
    fn check(&self, _method: &str, caller: Option<&Caller>) -> Result<(), tonic::Status> {
        self.seen.lock().unwrap().push(caller.cloned());
        match caller {
            None => Err(tonic::Status::unauthenticated("no client certificate")),
            Some(c) if c.identity.role() == Role::Admin => Ok(()),
            Some(c) => Err(tonic::Status::permission_denied(format!("{} may not", c.identity))),
        }
    }
}

struct Served {
    address: String,
    policy: Arc<AdminsOnly>,
}

async fn serve(ca: &ClusterCa) -> Served {
    let server = Transport::new(Security::MutualTls(credentials(ca, Role::Server, "1", &[SERVER_NAME]))).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let incoming = server.incoming(listener).unwrap();
    let policy = Arc::new(AdminsOnly::default());
    let (_reporter, health) = tonic_health::server::health_reporter();
    let router = server.server().layer(transport::AuthorizeLayer::new(policy.clone())).add_service(health);
    tokio::spawn(router.serve_with_incoming(incoming));
    Served { address, policy }
}

async fn check(transport: &Transport, address: &str) -> Result<(), String> {
    let channel = transport.connect(address, Profile::CLI_CALL).await.map_err(|e| format!("connect: {e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test]
async fn a_client_with_a_certificate_of_the_cluster_is_served_and_known_by_its_identity() {
    let ca = ClusterCa::create("test", SystemTime::now(), DAY).unwrap();
    let served = serve(&ca).await;
    let admin = Transport::new(Security::MutualTls(credentials(&ca, Role::Admin, "root", &[]))).unwrap();
    check(&admin, &served.address).await.unwrap();
    let seen = served.policy.seen.lock().unwrap().clone();
    let caller = seen.last().cloned().flatten().expect("the caller was known");
    assert_eq!(caller.identity, Identity::new(Role::Admin, "root").unwrap());
    assert!(!caller.serial.is_empty());

    // Another role reaches the policy, which refuses it.
    let agent = Transport::new(Security::MutualTls(credentials(&ca, Role::Agent, "node-1", &[]))).unwrap();
    let refused = check(&agent, &served.address).await.unwrap_err();
    assert!(refused.contains("PermissionDenied") && refused.contains("agent node-1"), "{refused}");
}

#[tokio::test]
async fn plaintext_clients_and_clients_of_another_ca_never_reach_the_service() {
    let ca = ClusterCa::create("test", SystemTime::now(), DAY).unwrap();
    let served = serve(&ca).await;
    let refused = check(&Transport::plaintext(), &served.address).await.unwrap_err();
    assert!(!refused.is_empty());
    let other = ClusterCa::create("other", SystemTime::now(), DAY).unwrap();
    let stranger = Transport::new(Security::MutualTls(credentials(&other, Role::Admin, "root", &[]))).unwrap();
    let refused = check(&stranger, &served.address).await.unwrap_err();
    assert!(refused.contains("connect"), "the handshake fails: {refused}");
    assert!(served.policy.seen.lock().unwrap().is_empty(), "no call got as far as the policy");
}

#[tokio::test]
async fn a_joining_client_trusts_only_the_pinned_ca_and_is_anonymous() {
    let ca = ClusterCa::create("test", SystemTime::now(), DAY).unwrap();
    let served = serve(&ca).await;
    let joining = Transport::new(Security::Join(ca.fingerprint())).unwrap();
    let refused = check(&joining, &served.address).await.unwrap_err();
    assert!(refused.contains("Unauthenticated"), "TLS works, the call has no caller: {refused}");
    assert_eq!(served.policy.seen.lock().unwrap().as_slice(), &[None]);

    let other = ClusterCa::create("other", SystemTime::now(), DAY).unwrap();
    let misled = Transport::new(Security::Join(other.fingerprint())).unwrap();
    let refused = check(&misled, &served.address).await.unwrap_err();
    assert!(refused.contains("another cluster"), "{refused}");
}

#[tokio::test]
async fn a_replaced_identity_is_presented_from_the_next_connection_on() {
    let ca = ClusterCa::create("test", SystemTime::now(), DAY).unwrap();
    let served = serve(&ca).await;
    let admin = Transport::new(Security::MutualTls(credentials(&ca, Role::Admin, "root", &[]))).unwrap();
    check(&admin, &served.address).await.unwrap();
    let renewed = credentials(&ca, Role::Admin, "root", &[]);
    admin.replace_identity(&renewed.certificate_pem, &renewed.key_pem).unwrap();
    check(&admin, &served.address).await.unwrap();
    let serials: Vec<String> = served.policy.seen.lock().unwrap().iter().flatten().map(|c| c.serial.clone()).collect();
    assert_eq!(serials.len(), 2);
    assert_ne!(serials[0], serials[1], "the second connection presented the renewed certificate");
    let wrong_key = credentials(&ca, Role::Admin, "root", &[]).key_pem;
    let err = admin.replace_identity(&renewed.certificate_pem, &wrong_key).unwrap_err().to_string();
    assert!(err.contains("does not belong"), "{err}");
}
