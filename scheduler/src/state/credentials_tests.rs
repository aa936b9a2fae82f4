//! Table-style tests of the credentials part of the state machine (join tokens, certificates,
//! revocations) and of removing a node: each feeds commands and asserts observable state.

use pki::{Fingerprint, JoinToken, Role, TokenError, check_token};

use super::*;
use crate::test_fixtures::{cluster, task};

const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn add_token(token: &JoinToken, expires_ms: Option<u64>, now_ms: u64) -> Command {
    let record = token.record(expires_ms);
    Command::AddToken { id: record.id.clone(), role: record.role, digest_hex: record.digest_hex(), expires_ms, now_ms }
}

fn record(role: Role, name: &str, serial: &str, not_after_ms: u64, now_ms: u64) -> Command {
    Command::RecordCertificate { role, name: name.into(), serial: serial.into(), not_after_ms, now_ms, holder: HolderCheck::Any }
}

fn revoke(serial: &str, not_after_ms: u64, now_ms: u64) -> Command {
    Command::RevokeCertificate { serial: serial.into(), not_after_ms, now_ms }
}

/// Applies `command` and returns the kind of its rejection, if any; a rejected command must
/// leave the state as it was.
fn outcome(state: &mut ClusterState, command: Command) -> Result<(), RejectionKind> {
    let before = state.clone();
    let result = state.apply(command.clone()).map(|_| ()).map_err(|e| e.kind);
    if result.is_err() {
        assert_eq!(*state, before, "{command:?} was refused but changed the state");
    }
    result
}

#[test]
fn tokens_are_added_once_listed_without_secrets_and_revoked() {
    let ca = Fingerprint([1; 32]);
    let agent = JoinToken::generate(Role::Agent, ca).unwrap();
    let admin = JoinToken::generate(Role::Admin, ca).unwrap();
    let mut state = ClusterState::default();
    // (command, expected)
    let cases = [
        (add_token(&agent, Some(1_000), 10), Ok(())),
        (add_token(&admin, None, 20), Ok(())),
        (add_token(&agent, Some(5_000), 30), Err(RejectionKind::Conflict)),
        (Command::RevokeToken { id: "000000000000".into(), now_ms: 40 }, Err(RejectionKind::NotFound)),
        (Command::RevokeToken { id: admin.id(), now_ms: 50 }, Ok(())),
        (Command::RevokeToken { id: admin.id(), now_ms: 60 }, Err(RejectionKind::NotFound)),
    ];
    for (command, expected) in cases {
        assert_eq!(outcome(&mut state, command.clone()), expected, "{command:?}");
    }
    let listed: Vec<_> = state.tokens().map(|t| (t.id.clone(), t.role, t.created_ms, t.expires_ms)).collect();
    assert_eq!(listed, [(agent.id(), Role::Agent, 10, Some(1_000))], "the duplicate did not replace the first");
    let snapshot = String::from_utf8(state.to_snapshot()).unwrap();
    let text = agent.to_string();
    assert!(!snapshot.contains(&text[text.len() - 64..]), "the state keeps no secret");
}

#[test]
fn token_records_are_what_check_token_reads() {
    let ca = Fingerprint([2; 32]);
    let agent = JoinToken::generate(Role::Agent, ca).unwrap();
    let server = JoinToken::generate(Role::Server, ca).unwrap();
    let mut state = ClusterState::default();
    state.apply(add_token(&agent, Some(10_000), 1)).unwrap();
    state.apply(add_token(&server, None, 2)).unwrap();
    let mut expected = vec![agent.record(Some(10_000)), server.record(None)];
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(state.token_records(), expected, "ordered by id");

    let check = |state: &ClusterState, token: &JoinToken, now_ms| check_token(token, &ca, &state.token_records(), now_ms);
    // (token, now_ms, expected)
    let cases = [
        (&agent, 9_999, Ok(Role::Agent)),
        (&agent, 10_000, Err(TokenError::Expired { id: agent.id(), expired_ms: 10_000 })),
        (&server, u64::MAX, Ok(Role::Server)),
    ];
    for (token, now_ms, expected) in cases {
        assert_eq!(check(&state, token, now_ms), expected, "{token:?} at {now_ms}");
    }
    state.apply(Command::RevokeToken { id: server.id(), now_ms: 3 }).unwrap();
    assert_eq!(check(&state, &server, 4), Err(TokenError::Unknown { id: server.id() }), "a revoked token joins nobody");
}

#[test]
fn expired_tokens_are_forgotten_by_the_next_token_command() {
    let ca = Fingerprint([3; 32]);
    let short = JoinToken::generate(Role::Agent, ca).unwrap();
    let long = JoinToken::generate(Role::Agent, ca).unwrap();
    let mut state = ClusterState::default();
    state.apply(add_token(&short, Some(100), 1)).unwrap();
    state.apply(add_token(&long, Some(1_000), 2)).unwrap();
    assert_eq!(state.tokens().count(), 2, "nothing expired yet");
    state.apply(add_token(&JoinToken::generate(Role::Reader, ca).unwrap(), None, 100)).unwrap();
    let ids: Vec<&str> = state.tokens().map(|t| t.id.as_str()).collect();
    assert!(!ids.contains(&short.id().as_str()) && ids.contains(&long.id().as_str()), "{ids:?}");
    assert_eq!(ids.len(), 2);
}

#[test]
fn a_certificate_holds_its_name_and_a_renewal_replaces_it() {
    let mut state = ClusterState::default();
    state.apply(record(Role::Agent, "node1", "aa01", 1_000, 10)).unwrap();
    state.apply(record(Role::Server, "node1", "bb01", 5_000, 11)).unwrap();
    let entry = |state: &ClusterState, role| state.certificate_of(role, "node1").cloned();
    assert_eq!(entry(&state, Role::Agent), Some(CertificateEntry { serial: "aa01".into(), not_after_ms: 1_000, issued_ms: 10 }));
    assert_eq!(entry(&state, Role::Reader), None, "names are per role");

    // The renewal replaces the entry; the old serial is not revoked (it expires on its own).
    state.apply(record(Role::Agent, "node1", "aa02", 2_000, 900)).unwrap();
    assert_eq!(entry(&state, Role::Agent), Some(CertificateEntry { serial: "aa02".into(), not_after_ms: 2_000, issued_ms: 900 }));
    assert!(!state.is_revoked("aa01"));
    assert_eq!(entry(&state, Role::Server).unwrap().serial, "bb01", "the other role's holder is untouched");

    // A revoked serial cannot become anyone's certificate.
    state.apply(revoke("cc01", 9_000, 950)).unwrap();
    assert_eq!(outcome(&mut state, record(Role::Agent, "node2", "cc01", 9_000, 960)), Err(RejectionKind::Conflict));

    // Once expired, the entry is forgotten by the next credentials command: the name is free.
    state.apply(record(Role::Reader, "ci", "dd01", 9_000, 2_001)).unwrap();
    assert_eq!(entry(&state, Role::Agent), None);
    assert_eq!(entry(&state, Role::Server).unwrap().serial, "bb01");
}

#[test]
fn revoked_serials_are_kept_until_their_certificates_end() {
    let mut state = ClusterState::default();
    state.apply(record(Role::Agent, "node1", "aa01", 500, 1)).unwrap();
    // (command, revoked serials after it)
    let cases: [(Command, &[&str]); 5] = [
        (revoke("aa01", 500, 10), &["aa01"]),
        (revoke("bb01", 1_000, 20), &["aa01", "bb01"]),
        // A certificate that has ended is refused as expired: nothing to keep.
        (revoke("cc01", 29, 30), &["aa01", "bb01"]),
        (revoke("dd01", 2_000, 501), &["bb01", "dd01"]),
        (Command::AddToken { id: "t1".into(), role: Role::Agent, digest_hex: HEX64.into(), expires_ms: None, now_ms: 1_001 }, &["dd01"]),
    ];
    for (command, expected) in cases {
        state.apply(command.clone()).unwrap();
        assert_eq!(state.revoked_serials().collect::<Vec<_>>(), expected, "after {command:?}");
        assert!(expected.iter().all(|s| state.is_revoked(s)));
    }
    assert!(!state.is_revoked("aa01"));
    assert_eq!(state.certificate_of(Role::Agent, "node1"), None, "revoking the current certificate frees the name");
}

#[test]
fn removing_a_node_loses_its_tasks_replaces_them_and_revokes_its_certificate() {
    let mut state = cluster(2, 4000);
    state
        .apply(Command::ApplyService {
            spec: crate::test_fixtures::spec("quotes:1", 2, 250),
            image_digest: String::new(),
            now_ms: 1,
            unresolved_reason: String::new(),
        })
        .unwrap();
    let done = crate::state::Task { desired: DesiredState::Stopped, exit_code: Some(0), ..task("quotes-0", 1, TaskState::Exited) };
    let tasks = vec![task("quotes-1", 1, TaskState::Running), task("quotes-2", 2, TaskState::Running), done.clone()];
    state.apply(Command::PutTasks { tasks, now_ms: 2 }).unwrap();
    state.apply(record(Role::Agent, "node1", "aa01", 10_000, 3)).unwrap();
    state.apply(record(Role::Agent, "node2", "bb01", 10_000, 3)).unwrap();

    assert_eq!(outcome(&mut state, Command::RemoveNode { name: "node9".into(), now_ms: 4 }), Err(RejectionKind::NotFound));
    assert_eq!(outcome(&mut state, Command::RemoveNode { name: "a b".into(), now_ms: 4 }), Err(RejectionKind::Invalid));
    state.apply(Command::RemoveNode { name: "node1".into(), now_ms: 5 }).unwrap();

    assert!(state.node_named("node1").is_none() && state.node(1).is_none());
    let lost = state.task("quotes-1").unwrap();
    assert_eq!(
        (lost.observed, lost.desired, lost.message.as_str(), lost.updated_ms),
        (TaskState::Lost, DesiredState::Stopped, "node node1 was removed", 5)
    );
    assert_eq!(state.task("quotes-2").unwrap().observed, TaskState::Running, "other nodes' tasks stay");
    assert_eq!(state.task("quotes-0").unwrap(), &Task { updated_ms: 2, ..done }, "a finished task stays as it was");
    assert_eq!(state.certificate_of(Role::Agent, "node1"), None);
    assert!(state.is_revoked("aa01") && !state.is_revoked("bb01"));

    // The reconciler places a replacement on the node that is left, and leaves the lost task be.
    let commands = crate::reconcile::reconcile(&state, 6, &mut |s| format!("{s}-3"));
    let put: Vec<&Task> = commands
        .iter()
        .flat_map(|c| match c {
            Command::PutTasks { tasks, .. } => tasks.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(put.iter().map(|t| (t.id.as_str(), t.node_id)).collect::<Vec<_>>(), [("quotes-3", 2)]);
    for command in commands {
        state.apply(command).unwrap();
    }

    // The machine joins again (new token, new certificate) and registers: a new node id, so no
    // report for the old tasks is taken from it.
    let register = Command::RegisterNode {
        name: "node1".into(),
        address: "10.0.0.1".into(),
        cpu_millis: 4000,
        memory_mib: 4096,
        labels: Default::default(),
        now_ms: 7,
        api_address: "10.0.0.1:7071".into(),
    };
    assert_eq!(state.apply(register).unwrap(), Outcome::NodeRegistered { node_id: 3 });
    state.apply(record(Role::Agent, "node1", "aa02", 20_000, 8)).unwrap();
    assert_eq!(state.certificate_of(Role::Agent, "node1").unwrap().serial, "aa02");
}

#[test]
fn bad_values_are_refused_before_anything_changes() {
    let mut state = ClusterState::default();
    let token = |id: &str, digest: &str, expires_ms| Command::AddToken {
        id: id.into(),
        role: Role::Agent,
        digest_hex: digest.into(),
        expires_ms,
        now_ms: 10,
    };
    let long_name = "n".repeat(crate::state::limits::MAX_NAME_LEN + 1);
    let cases = [
        token("t1", &HEX64[..63], None),
        token("t1", &HEX64.to_uppercase(), None),
        token("t1", &HEX64.replace('a', "g"), None),
        token("", HEX64, None),
        token("a/b", HEX64, None),
        token("t1", HEX64, Some(10)),
        Command::RevokeToken { id: long_name.clone(), now_ms: 10 },
        record(Role::Agent, &long_name, "aa", 100, 10),
        record(Role::Agent, "", "aa", 100, 10),
        record(Role::Agent, "node1", "", 100, 10),
        record(Role::Agent, "node1", &"a".repeat(MAX_SERIAL_HEX + 1), 100, 10),
        record(Role::Agent, "node1", "AA", 100, 10),
        record(Role::Agent, "node1", "aa", 9, 10),
        revoke("xyz", 100, 10),
        revoke(&"b".repeat(MAX_SERIAL_HEX + 1), 100, 10),
        Command::RemoveNode { name: long_name, now_ms: 10 },
    ];
    for command in cases {
        assert_eq!(outcome(&mut state, command.clone()), Err(RejectionKind::Invalid), "{command:?}");
    }
    assert_eq!(state, ClusterState::default());
    state.apply(record(Role::Agent, "node1", &"a".repeat(MAX_SERIAL_HEX), 100, 10)).unwrap();
}

#[test]
fn tokens_certificates_and_revocations_are_bounded() {
    let mut state = ClusterState::default();
    let token = |i: usize, expires_ms, now_ms| Command::AddToken {
        id: format!("t{i}"),
        role: Role::Agent,
        digest_hex: HEX64.into(),
        expires_ms,
        now_ms,
    };
    for i in 0..MAX_TOKENS {
        state.apply(token(i, if i == 0 { Some(100) } else { None }, 1)).unwrap();
    }
    assert_eq!(outcome(&mut state, token(MAX_TOKENS, None, 1)), Err(RejectionKind::Conflict));
    // Once one has expired there is room again.
    state.apply(token(MAX_TOKENS, None, 100)).unwrap();
    assert_eq!(state.tokens().count(), MAX_TOKENS);

    state.credentials = credentials::Credentials::filled(MAX_CERTIFICATES, MAX_REVOKED_SERIALS, 1_000);
    // (command, expected): full, except for what replaces an entry or has ended.
    let cases = [
        (record(Role::Agent, "new", "aa", 2_000, 10), Err(RejectionKind::Conflict)),
        (record(Role::Agent, "agent-7", "aa", 2_000, 10), Ok(())),
        (revoke("aa0001", 2_000, 10), Err(RejectionKind::Conflict)),
        (revoke("ff7", 1_000, 10), Ok(())),
        (revoke("aa0002", 5, 10), Ok(())),
        (Command::RemoveNode { name: "agent-8".into(), now_ms: 10 }, Err(RejectionKind::NotFound)),
    ];
    for (command, expected) in cases {
        assert_eq!(outcome(&mut state, command.clone()), expected, "{command:?}");
    }
    // A node whose certificate could not be revoked is not removed.
    let mut with_node = cluster(1, 1000);
    with_node.credentials = credentials::Credentials::filled(0, MAX_REVOKED_SERIALS, 1_000);
    with_node.apply(record(Role::Agent, "node1", "aa", 2_000, 10)).unwrap();
    assert_eq!(outcome(&mut with_node, Command::RemoveNode { name: "node1".into(), now_ms: 11 }), Err(RejectionKind::Conflict));
    // After the revoked certificates end, everything has room again.
    state.apply(record(Role::Agent, "new", "aa", 2_000, 1_001)).unwrap();
    state.apply(revoke("aa0001", 2_000, 1_001)).unwrap();
    with_node.apply(Command::RemoveNode { name: "node1".into(), now_ms: 1_001 }).unwrap();
    assert_eq!(with_node.revoked_serials().collect::<Vec<_>>(), ["aa"]);
}

#[test]
fn credentials_round_trip_through_commands_and_snapshots() {
    let mut state = ClusterState::default();
    let commands = [
        Command::AddToken { id: "t1".into(), role: Role::Server, digest_hex: HEX64.into(), expires_ms: Some(9_000), now_ms: 1 },
        record(Role::Agent, "node1", "aa01", 9_000, 2),
        record(Role::Admin, "root@host", "bb01", 9_000, 2),
        revoke("cc01", 9_000, 3),
        Command::RevokeToken { id: "t9".into(), now_ms: 4 },
    ];
    for command in commands {
        let bytes = command.encode();
        let decoded = Command::decode(&bytes).unwrap();
        assert_eq!(decoded, command);
        let _ = state.apply(decoded);
    }
    let add = String::from_utf8(
        Command::AddToken { id: "t".into(), role: Role::Reader, digest_hex: HEX64.into(), expires_ms: None, now_ms: 1 }.encode(),
    )
    .unwrap();
    assert!(add.contains(r#""op":"add_token""#) && add.contains(r#""role":"reader""#), "{add}");
    let snapshot = state.to_snapshot();
    assert_eq!(ClusterState::from_snapshot(&snapshot).unwrap(), state);
    let json: serde_json::Value = serde_json::from_slice(&snapshot).unwrap();
    assert_eq!(json["credentials"]["certificates"]["admin"]["root@host"]["serial"], "bb01");
}

#[test]
fn snapshots_without_credentials_decode_and_are_written_as_before() {
    let state = cluster(1, 1000);
    let snapshot = String::from_utf8(state.to_snapshot()).unwrap();
    assert!(!snapshot.contains("credentials"), "an empty part is not written: {snapshot}");
    let decoded = ClusterState::from_snapshot(snapshot.as_bytes()).unwrap();
    assert_eq!(decoded, state);
    assert_eq!(decoded.token_records(), []);
    assert_eq!(decoded.revoked_serials().count(), 0);
}

#[test]
fn a_name_is_taken_by_one_join_and_renewed_only_by_its_current_certificate() {
    let checked = |serial: &str, now_ms: u64, holder: HolderCheck| Command::RecordCertificate {
        role: Role::Agent,
        name: "node-1".into(),
        serial: serial.into(),
        not_after_ms: now_ms + 10_000,
        now_ms,
        holder,
    };
    let mut state = ClusterState::default();
    // Two joins under one name, decided in log order: the first wins, the second is refused.
    assert_eq!(outcome(&mut state, checked("aa", 1, HolderCheck::Vacant)), Ok(()));
    assert_eq!(outcome(&mut state, checked("bb", 2, HolderCheck::Vacant)), Err(RejectionKind::Conflict));
    assert_eq!(state.certificate_of(Role::Agent, "node-1").unwrap().serial, "aa");
    // Renewal by the current certificate; a stale one (or a stranger's) is refused.
    assert_eq!(outcome(&mut state, checked("cc", 3, HolderCheck::Current("bb".into()))), Err(RejectionKind::Conflict));
    assert_eq!(outcome(&mut state, checked("cc", 3, HolderCheck::Current("aa".into()))), Ok(()));
    assert_eq!(outcome(&mut state, checked("dd", 4, HolderCheck::Current("aa".into()))), Err(RejectionKind::Conflict));
    // Once the current certificate has expired (or is revoked), the name is vacant again.
    assert_eq!(outcome(&mut state, checked("ee", 5_000, HolderCheck::Vacant)), Err(RejectionKind::Conflict), "cc lives until 10,003");
    assert_eq!(outcome(&mut state, checked("ee", 10_004, HolderCheck::Vacant)), Ok(()));
    assert_eq!(outcome(&mut state, revoke("ee", 20_004, 10_005)), Ok(()));
    assert_eq!(outcome(&mut state, checked("ff", 10_006, HolderCheck::Vacant)), Ok(()));
    assert_eq!(state.certificate_of(Role::Agent, "node-1").unwrap().serial, "ff");
}
