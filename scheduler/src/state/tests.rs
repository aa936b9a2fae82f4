//! Table-style tests of the state machine: each feeds commands and asserts observable state.

use super::*;
use crate::spec::ServiceSpec;

fn spec(image: &str, count: u32) -> ServiceSpec {
    crate::test_fixtures::spec(image, count, 250)
}

fn apply(state: &mut ClusterState, image: &str, count: u32, now_ms: u64) -> (u64, bool) {
    match state
        .apply(Command::ApplyService { spec: spec(image, count), image_digest: String::new(), now_ms, unresolved_reason: String::new() })
        .unwrap()
    {
        Outcome::Service { service, changed } => (service.current.revision, changed),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn every_changed_apply_makes_a_revision_and_unchanged_makes_none() {
    let mut state = ClusterState::default();
    assert_eq!(apply(&mut state, "quotes:1.0", 2, 10), (1, true));
    assert_eq!(apply(&mut state, "quotes:1.0", 2, 20), (1, false));
    assert_eq!(apply(&mut state, "quotes:1.1", 2, 30), (2, true));
    assert_eq!(apply(&mut state, "quotes:1.1", 3, 40), (3, true));
    let service = state.service("quotes").unwrap();
    let revisions: Vec<_> = service.revisions.iter().map(|r| (r.revision, r.spec.image.as_str(), r.created_ms)).collect();
    assert_eq!(revisions, [(1, "quotes:1.0", 10), (2, "quotes:1.1", 30), (3, "quotes:1.1", 40)]);
    assert_eq!((service.current, service.desired_count, service.updated_ms), (3, 3, 40));
}

#[test]
fn an_unchanged_apply_sets_a_scaled_count_back_to_the_files_without_a_revision() {
    let mut state = ClusterState::default();
    apply(&mut state, "quotes:1.0", 3, 10);
    state.apply(Command::ScaleService { name: "quotes".into(), count: 2, now_ms: 20 }).unwrap();
    assert_eq!(apply(&mut state, "quotes:1.0", 3, 30), (1, true));
    let service = state.service("quotes").unwrap();
    assert_eq!((service.revisions.len(), service.desired_count, service.updated_ms), (1, 3, 30));
    assert!(service.events.back().unwrap().message.contains("from 2 back to the file's 3"), "{:?}", service.events);
    // Once the count matches the file, the same apply changes nothing.
    assert_eq!(apply(&mut state, "quotes:1.0", 3, 40), (1, false));
}

#[test]
fn rollback_copies_the_previous_spec_into_a_new_revision() {
    let mut state = ClusterState::default();
    apply(&mut state, "quotes:1.0", 2, 1);
    apply(&mut state, "quotes:2.0", 2, 2);
    let outcome = state.apply(Command::RollbackService { name: "quotes".into(), to_revision: None, now_ms: 3 }).unwrap();
    let Outcome::Service { service, changed: true } = outcome else { panic!("{outcome:?}") };
    assert_eq!((service.current.revision, service.current.spec.image.as_str()), (3, "quotes:1.0"));
    assert_eq!(service.current.rolled_back_from, Some(1));
    // Rolling back to the spec that already runs changes nothing.
    let again = state.apply(Command::RollbackService { name: "quotes".into(), to_revision: Some(1), now_ms: 4 }).unwrap();
    assert!(matches!(again, Outcome::Service { changed: false, .. }));
}

#[test]
fn rollback_to_unknown_revision_names_the_range() {
    let mut state = ClusterState::default();
    apply(&mut state, "quotes:1.0", 2, 1);
    let before = state.clone();
    let err = state.apply(Command::RollbackService { name: "quotes".into(), to_revision: Some(9), now_ms: 2 }).unwrap_err();
    assert_eq!(err.kind, RejectionKind::NotFound);
    assert_eq!(err.message, "quotes has no revision 9: revisions are 1 to 1");
    let err = state.apply(Command::RollbackService { name: "quotes".into(), to_revision: None, now_ms: 2 }).unwrap_err();
    assert_eq!(err.kind, RejectionKind::Conflict);
    assert_eq!(state, before);
}

#[test]
fn scale_changes_count_without_a_revision_and_respects_autoscale_bounds() {
    let mut state = ClusterState::default();
    apply(&mut state, "quotes:1.0", 2, 1);
    state.apply(Command::ScaleService { name: "quotes".into(), count: 5, now_ms: 2 }).unwrap();
    let service = state.service("quotes").unwrap();
    assert_eq!((service.current, service.desired_count), (1, 5));

    let mut auto = spec("quotes:1.0", 3);
    auto.autoscale =
        Some(crate::spec::Autoscale { min: 2, max: 4, target_cpu_percent: 70, scale_out_cooldown_ms: 1_000, scale_in_cooldown_ms: 1_000 });
    state.apply(Command::ApplyService { spec: auto, image_digest: String::new(), now_ms: 3, unresolved_reason: String::new() }).unwrap();
    let err = state.apply(Command::ScaleService { name: "quotes".into(), count: 9, now_ms: 4 }).unwrap_err();
    assert_eq!(err.kind, RejectionKind::Invalid);
    assert!(err.message.contains("between 2 and 4"), "{}", err.message);
}

#[test]
fn delete_removes_the_service_and_stops_its_tasks() {
    let mut state = ClusterState::default();
    apply(&mut state, "quotes:1.0", 1, 1);
    let task = crate::test_fixtures::task("quotes-1", 0, TaskState::Pending);
    state.apply(Command::PutTasks { tasks: vec![task], now_ms: 2 }).unwrap();
    assert_eq!(
        state.apply(Command::DeleteService { name: "quotes".into(), now_ms: 3 }).unwrap(),
        Outcome::Deleted { name: "quotes".into() }
    );
    assert!(state.service("quotes").is_none());
    assert_eq!(state.task("quotes-1").unwrap().desired, DesiredState::Stopped);
    let err = state.apply(Command::DeleteService { name: "quotes".into(), now_ms: 4 }).unwrap_err();
    assert_eq!((err.kind, err.message.as_str()), (RejectionKind::NotFound, "no service named \"quotes\""));
}

#[test]
fn nodes_are_matched_by_name_on_register() {
    let mut state = ClusterState::default();
    let register = |address: &str| Command::RegisterNode {
        name: "node-a".into(),
        address: address.into(),
        cpu_millis: 2000,
        memory_mib: 4096,
        labels: Default::default(),
        now_ms: 1,
        api_address: format!("{address}:7071"),
    };
    assert_eq!(state.apply(register("10.0.0.1")).unwrap(), Outcome::NodeRegistered { node_id: 1 });
    state.apply(Command::SetNodeStatus { node_id: 1, status: NodeStatus::Down, now_ms: 2 }).unwrap();
    assert_eq!(state.apply(register("10.0.0.2")).unwrap(), Outcome::NodeRegistered { node_id: 1 });
    let node = state.node(1).unwrap();
    assert_eq!((node.address.as_str(), node.status), ("10.0.0.2", NodeStatus::Ready));
    assert_eq!(node.api_address, "10.0.0.2:7071", "a re-registration updates the agent API address");
    assert_eq!(state.nodes().count(), 1);
}

#[test]
fn commands_and_snapshots_without_an_api_address_still_decode() {
    let old = br#"{"v":1,"command":{"op":"register_node","name":"n","address":"10.0.0.1","cpu_millis":1000,"memory_mib":512,"labels":{},"now_ms":1}}"#;
    let Command::RegisterNode { api_address, .. } = Command::decode(old).unwrap() else { panic!("not a register_node") };
    assert_eq!(api_address, "");
}

#[test]
fn apply_commands_written_before_constraints_existed_still_decode() {
    let old = br#"{"v":1,"command":{"op":"apply_service","spec":{"name":"quotes","image":"quotes:1.0","command":[],"env":{},"cpu_millis":250,"memory_mib":128,"ports":[8080],"count":2,"autoscale":null,"health":null,"deploy":{"min_healthy_percent":100,"max_percent":200},"routes":[]},"image_digest":"","now_ms":1}}"#;
    let Command::ApplyService { spec: decoded, .. } = Command::decode(old).unwrap() else { panic!("not an apply_service") };
    assert_eq!(decoded, spec("quotes:1.0", 2));
    // A spec without constraints is written exactly as before, so older servers read it too.
    let again = Command::ApplyService { spec: decoded, image_digest: String::new(), now_ms: 1, unresolved_reason: String::new() };
    assert_eq!(again.encode(), old.to_vec());
}

#[test]
fn task_reports_from_the_wrong_node_are_refused() {
    let mut state = ClusterState::default();
    apply(&mut state, "quotes:1.0", 1, 1);
    let task = crate::test_fixtures::task("quotes-1", 2, TaskState::Assigned);
    state.apply(Command::PutTasks { tasks: vec![task], now_ms: 2 }).unwrap();
    let report = |node_id| Command::ReportTaskStatus {
        node_id,
        task_id: "quotes-1".into(),
        state: TaskState::Running,
        exit_code: None,
        endpoints: vec!["10.0.0.2:31000".into()],
        health: HealthStatus::Healthy,
        message: String::new(),
        now_ms: 3,
    };
    assert_eq!(state.apply(report(3)).unwrap_err().kind, RejectionKind::Conflict);
    state.apply(report(2)).unwrap();
    assert_eq!(state.task("quotes-1").unwrap().observed, TaskState::Running);
}

#[test]
fn a_task_that_dies_is_recorded_with_its_exit_code_once() {
    let mut state = ClusterState::default();
    apply(&mut state, "quotes:1.0", 1, 1);
    let task = |id: &str| crate::test_fixtures::task(id, 2, TaskState::Running);
    state.apply(Command::PutTasks { tasks: vec![task("quotes-1"), task("quotes-2")], now_ms: 2 }).unwrap();
    let exit = |id: &str, now_ms| Command::ReportTaskStatus {
        node_id: 2,
        task_id: id.into(),
        state: TaskState::Exited,
        exit_code: Some(3),
        endpoints: vec![],
        health: HealthStatus::Unknown,
        message: String::new(),
        now_ms,
    };
    state.apply(exit("quotes-1", 10)).unwrap();
    state.apply(exit("quotes-1", 11)).unwrap(); // a repeated report is no new death
    state.apply(exit("quotes-2", 20)).unwrap();
    let events: Vec<&str> = state.service("quotes").unwrap().events.iter().skip(1).map(|e| e.message.as_str()).collect();
    assert_eq!(events, ["task quotes-1 exited with code 3", "task quotes-2 exited with code 3",]);
}

#[test]
fn event_log_is_bounded_per_service() {
    let mut state = ClusterState::default();
    apply(&mut state, "quotes:1.0", 1, 0);
    for i in 0..(EVENTS_PER_SERVICE as u32 + 20) {
        state.apply(Command::ScaleService { name: "quotes".into(), count: 2 + i % 2, now_ms: u64::from(i) + 1 }).unwrap();
    }
    let events = &state.service("quotes").unwrap().events;
    assert_eq!(events.len(), EVENTS_PER_SERVICE);
    assert_eq!(events.back().unwrap().unix_ms, u64::from(EVENTS_PER_SERVICE as u32 + 20));
}

#[test]
fn same_commands_give_same_state_and_snapshot_round_trips() {
    let commands = vec![
        Command::ApplyService { spec: spec("quotes:1.0", 2), image_digest: String::new(), now_ms: 1, unresolved_reason: String::new() },
        Command::ScaleService { name: "quotes".into(), count: 4, now_ms: 2 },
        Command::ApplyService {
            spec: spec("quotes:1.1", 2),
            image_digest: "sha256:ab".into(),
            now_ms: 3,
            unresolved_reason: String::new(),
        },
        Command::ScaleService { name: "missing".into(), count: 4, now_ms: 4 },
    ];
    let run = || {
        let mut state = ClusterState::with_members([(1, "127.0.0.1:1".to_string())].into());
        for c in commands.clone() {
            let _ = state.apply(Command::decode(&c.encode()).unwrap());
        }
        state
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert_eq!(a.to_snapshot(), b.to_snapshot());
    assert_eq!(ClusterState::from_snapshot(&a.to_snapshot()).unwrap(), a);
}

#[test]
fn digests_pin_revisions_and_an_unresolved_digest_is_an_event() {
    let mut state = ClusterState::default();
    let mut apply_pinned = |digest: &str, reason: &str, now_ms: u64| {
        let command = Command::ApplyService {
            spec: spec("127.0.0.1:1/quotes:1.0", 2),
            image_digest: digest.into(),
            now_ms,
            unresolved_reason: reason.into(),
        };
        // Without a reason the command is written exactly as before the field existed.
        let bytes = command.encode();
        assert_eq!(String::from_utf8_lossy(&bytes).contains("unresolved_reason"), !reason.is_empty());
        match state.apply(Command::decode(&bytes).unwrap()).unwrap() {
            Outcome::Service { service, changed } => (service.current.revision, changed),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(apply_pinned("sha256:aa", "", 1), (1, true));
    // The tag moved: same spec, new digest, new revision.
    assert_eq!(apply_pinned("sha256:bb", "", 2), (2, true));
    // The registry is down: nothing changes (the pinned revision keeps running), no event.
    assert_eq!(apply_pinned("", "registry down", 3), (2, false));
    let service = state.service("quotes").unwrap();
    let digests: Vec<&str> = service.revisions.iter().map(|r| r.image_digest.as_str()).collect();
    assert_eq!(digests, ["sha256:aa", "sha256:bb"]);
    assert!(!service.events.iter().any(|e| e.message.contains("registry down")));

    // A new spec whose digest could not be resolved is applied, and the event says why.
    let command = Command::ApplyService {
        spec: spec("127.0.0.1:1/quotes:2.0", 2),
        image_digest: String::new(),
        now_ms: 4,
        unresolved_reason: "connection refused".into(),
    };
    state.apply(command).unwrap();
    let service = state.service("quotes").unwrap();
    assert_eq!((service.current, service.current_revision().image_digest.as_str()), (3, ""));
    assert_eq!(
        service.events.back().unwrap().message,
        "revision 3: the digest of 127.0.0.1:1/quotes:2.0 could not be resolved (connection refused); \
         its tasks will pull it by tag"
    );
}

#[test]
fn snapshots_written_before_the_autoscaler_and_draining_existed_still_decode() {
    let mut state = ClusterState::default();
    apply(&mut state, "quotes:1.0", 1, 1);
    let mut json: serde_json::Value = serde_json::from_slice(&state.to_snapshot()).unwrap();
    // What an older server wrote: no autoscale status on services.
    json["services"]["quotes"].as_object_mut().unwrap().remove("autoscale");
    let old = serde_json::to_vec(&json).unwrap();
    let decoded = ClusterState::from_snapshot(&old).unwrap();
    let service = decoded.service("quotes").unwrap();
    assert_eq!(service.autoscale, crate::state::AutoscaleStatus::default());
    assert_eq!(service.desired_count, 1);
}

fn apply_spec(state: &mut ClusterState, spec: ServiceSpec, now_ms: u64) -> Result<Outcome, Rejection> {
    state.apply(Command::ApplyService { spec, image_digest: String::new(), now_ms, unresolved_reason: String::new() })
}

#[test]
fn apply_refuses_what_the_api_would_refuse_whoever_proposed_it() {
    let mut state = ClusterState::default();
    // A forwarded proposal skips the gRPC API's checks: the state machine holds the same rules.
    for bad in [
        ServiceSpec { count: u32::MAX, ..spec("quotes:1", 1) },
        ServiceSpec { name: "../etc".into(), ..spec("quotes:1", 1) },
        ServiceSpec { env: [("BIG".to_string(), "v".repeat(1 << 20))].into(), ..spec("quotes:1", 1) },
    ] {
        let err = apply_spec(&mut state, bad, 1).unwrap_err();
        assert_eq!(err.kind, RejectionKind::Invalid, "{err}");
    }
    assert_eq!(state, ClusterState::default(), "nothing was stored");
    let err = state.apply(Command::ScaleService { name: "quotes".into(), count: u32::MAX, now_ms: 1 }).unwrap_err();
    assert_eq!(err.kind, RejectionKind::Invalid);
    let bad_digest = state.apply(Command::ApplyService {
        spec: spec("quotes:1", 1),
        image_digest: "sha256:../x".into(),
        now_ms: 1,
        unresolved_reason: String::new(),
    });
    assert!(bad_digest.unwrap_err().message.contains("image digest"));
}

#[test]
fn the_sum_of_desired_counts_is_bounded() {
    let mut state = ClusterState::default();
    let max = crate::spec::validate::MAX_COUNT;
    let services = (MAX_DESIRED_TASKS / u64::from(max)) as u32;
    for i in 0..services {
        apply_spec(&mut state, ServiceSpec { name: format!("s{i}"), ..spec("quotes:1", max) }, 1).unwrap();
    }
    let err = apply_spec(&mut state, ServiceSpec { name: "one-more".into(), ..spec("quotes:1", 1) }, 2).unwrap_err();
    assert_eq!(err.kind, RejectionKind::Conflict);
    assert!(err.message.contains("limit"), "{err}");
    // Scaling down is always allowed, and frees room.
    state.apply(Command::ScaleService { name: "s0".into(), count: 0, now_ms: 3 }).unwrap();
    apply_spec(&mut state, ServiceSpec { name: "one-more".into(), ..spec("quotes:1", 1) }, 4).unwrap();
    // The sum is kept, not stored: a state read from its snapshot counts it again.
    let mut read = ClusterState::from_snapshot(&state.to_snapshot()).unwrap();
    let more = |name: &str, count| ServiceSpec { name: name.into(), ..spec("quotes:1", count) };
    assert!(apply_spec(&mut read, more("two-more", max), 5).is_err(), "the limit holds in a state read back");
    // A deleted service's count is free again, and no more than that.
    read.apply(Command::DeleteService { name: "s1".into(), now_ms: 6 }).unwrap();
    apply_spec(&mut read, more("two-more", max), 7).unwrap();
    assert!(apply_spec(&mut read, more("three-more", max), 8).is_err());
    // A scale up counts what it adds: s0 has 0 of the room's max - 1.
    assert!(read.apply(Command::ScaleService { name: "s0".into(), count: max, now_ms: 9 }).is_err());
    read.apply(Command::ScaleService { name: "s0".into(), count: max - 1, now_ms: 10 }).unwrap();
}

#[test]
fn old_revisions_are_forgotten_unless_a_task_runs_them() {
    let mut state = crate::test_fixtures::cluster(1, 4000);
    apply(&mut state, "quotes:0", 1, 1);
    let mut task = crate::test_fixtures::task("quotes-1", 1, TaskState::Running);
    task.revision = 1;
    state.apply(Command::PutTasks { tasks: vec![task], now_ms: 1 }).unwrap();
    for i in 1..=(MAX_REVISIONS as u64 + 10) {
        apply(&mut state, &format!("quotes:{i}"), 1, 1 + i);
    }
    let service = state.service("quotes").unwrap();
    assert_eq!(service.revisions.len(), MAX_REVISIONS);
    let kept: Vec<u64> = service.revisions.iter().map(|r| r.revision).collect();
    assert_eq!(kept[0], 1, "revision 1 still has a task");
    assert_eq!(kept[1], 13, "the oldest ones without tasks went first");
    assert_eq!(*kept.last().unwrap(), MAX_REVISIONS as u64 + 11);
    let err = state.apply(Command::RollbackService { name: "quotes".into(), to_revision: Some(5), now_ms: 999 }).unwrap_err();
    assert_eq!(
        err.message,
        format!("quotes has no revision 5: revisions are 1 to {} (it keeps the last {MAX_REVISIONS})", MAX_REVISIONS + 11)
    );
}

#[test]
fn long_texts_are_cut_and_bad_addresses_refused() {
    let mut state = crate::test_fixtures::cluster(1, 4000);
    apply(&mut state, "quotes:1", 1, 1);
    state.apply(Command::PutTasks { tasks: vec![crate::test_fixtures::task("quotes-1", 1, TaskState::Assigned)], now_ms: 1 }).unwrap();
    let task = state.task("quotes-1").unwrap().clone();
    crate::test_fixtures::report(&mut state, &task, TaskState::Failed, None, &"x".repeat(100_000), 2);
    assert!(state.task("quotes-1").unwrap().message.len() <= MAX_TEXT_BYTES);
    assert!(state.service("quotes").unwrap().events.iter().all(|e| e.message.len() <= MAX_TEXT_BYTES));
    let register = |address: &str, api_address: &str| Command::RegisterNode {
        name: "n9".into(),
        address: address.into(),
        cpu_millis: 1000,
        memory_mib: 1024,
        labels: Default::default(),
        now_ms: 3,
        api_address: api_address.into(),
    };
    for (address, api) in
        [("10.0.0.9", "evil@10.0.0.9:7071"), ("10.0.0.9", "10.0.0.9:7071/x"), ("10.0.0.9/8", ""), ("10.0.0.9", "10.0.0.9")]
    {
        let err = state.apply(register(address, api)).unwrap_err();
        assert_eq!(err.kind, RejectionKind::Invalid, "{address} {api}: {err}");
    }
    state.apply(register("10.0.0.9", "10.0.0.9:7071")).unwrap();
    state.apply(register("fd00::9", "[fd00::9]:7071")).unwrap();
}

/// The leader skips a look at a state no entry changed ([`StateMachine::changed`]): every
/// answer that says "unchanged" must come from an apply that left the state equal.
#[test]
fn an_answer_saying_nothing_changed_comes_with_an_equal_state() {
    use crate::raft::StateMachine;
    let mut state = ClusterState::default();
    apply(&mut state, "quotes:1.0", 2, 10);
    let cases = [
        (
            "the same file again",
            Command::ApplyService {
                spec: spec("quotes:1.0", 2),
                image_digest: String::new(),
                now_ms: 20,
                unresolved_reason: String::new(),
            },
            false,
        ),
        ("a scale to the current count", Command::ScaleService { name: "quotes".into(), count: 2, now_ms: 20 }, false),
        ("a scale of no service", Command::ScaleService { name: "nothing".into(), count: 2, now_ms: 20 }, false),
        ("a scale beyond the limit", Command::ScaleService { name: "quotes".into(), count: u32::MAX, now_ms: 20 }, false),
        ("a rollback with nothing before", Command::RollbackService { name: "quotes".into(), to_revision: None, now_ms: 20 }, false),
        ("a scale to another count", Command::ScaleService { name: "quotes".into(), count: 3, now_ms: 20 }, true),
    ];
    for (what, command, changes) in cases {
        let before = state.clone();
        let answer = state.apply(command);
        assert_eq!(ClusterState::changed(&answer), changes, "{what}: {answer:?}");
        assert_eq!(state != before, changes, "{what}: the state changed: {changes}");
        state = before;
    }
}
