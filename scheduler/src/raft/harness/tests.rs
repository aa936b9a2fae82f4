//! The Raft loop under partitions, leader changes, log divergence, snapshots, membership
//! changes, message loss and restarts, on the in-memory network and tokio's paused clock.

use raft::eraftpb::MessageType;

use super::cluster::{TestCluster, TestHandle, WAIT_LIMIT, address};
use super::list_machine::ListAnswer;
use crate::raft::storage::Bootstrap;
use crate::raft::{Proposal, ProposeFailure, RaftOptions, Role, StateMachine as _};

/// The servers' defaults (100 ms ticks, 1 s election timeout), on virtual time.
fn options() -> RaftOptions {
    RaftOptions::new(0)
}

fn others(all: &[u64], but: u64) -> Vec<u64> {
    all.iter().copied().filter(|id| *id != but).collect()
}

/// Hands `count` commands (`{prefix}0`, `{prefix}1`, ...) to `server`'s loop one after another
/// without waiting, then checks each was appended in order from log position `first`.
async fn submit_together(server: &TestHandle, prefix: &str, count: usize, first: usize) {
    let mut answers = Vec::new();
    for i in 0..count {
        answers.push(server.submit(Proposal::Command(format!("{prefix}{i}"))).await.expect("submitted"));
    }
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.await.expect("answered"), Ok(ListAnswer::Appended(first + i)), "proposal {prefix}{i}");
    }
}

/// The leader among `all`, and a follower that knows it.
async fn leader_and_a_follower_hearing_it(cluster: &TestCluster, all: &[u64]) -> (u64, u64) {
    let leader = cluster.wait_for_leader(all).await;
    let follower = others(all, leader)[0];
    cluster.wait_until("the follower hears the leader", |c| c.status(follower).leader_id == leader).await;
    (leader, follower)
}

#[tokio::test(start_paused = true)]
async fn a_leader_is_elected_and_a_write_commits_on_every_server() {
    let cluster = TestCluster::start(3, options());
    let all = [1, 2, 3];
    let leader = cluster.wait_for_leader(&all).await;
    assert_eq!(cluster.write(&all, "a").await, Ok(ListAnswer::Appended(0)));
    assert_eq!(cluster.wait_converged(&all, 1).await, ["a"]);
    for id in all {
        assert_eq!((cluster.status(id).leader_id, cluster.voters(id)), (leader, vec![1, 2, 3]), "server {id}");
    }
    // A command the state machine refuses is answered, and changes nothing anywhere.
    assert!(matches!(cluster.write(&all, "").await, Ok(ListAnswer::Refused(_))));
    assert_eq!(cluster.write(&all, "b").await, Ok(ListAnswer::Appended(1)));
    assert_eq!(cluster.wait_converged(&all, 2).await, ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn an_isolated_leader_steps_down_and_its_uncommitted_entry_is_discarded_on_heal() {
    let cluster = TestCluster::start(3, options());
    let all = [1, 2, 3];
    cluster.write(&all, "before").await.expect("committed");
    cluster.wait_converged(&all, 1).await;

    let old = cluster.wait_for_leader(&all).await;
    let old_term = cluster.status(old).term;
    cluster.network.isolate(old);
    // The isolated leader still takes a proposal into its log, but cannot commit it.
    let stranded = {
        let handle = cluster.handle(old).clone();
        tokio::spawn(async move { handle.propose(Proposal::Command("stranded".into())).await })
    };

    // The majority elects a new leader in a newer term and commits without it.
    let majority = others(&all, old);
    let new = cluster.wait_for_leader(&majority).await;
    assert_ne!(new, old);
    assert!(cluster.status(new).term > old_term);
    assert_eq!(cluster.write(&majority, "after").await, Ok(ListAnswer::Appended(1)));
    cluster.wait_converged(&majority, 2).await;

    // The old leader steps down by itself (check quorum), and its proposer hears that the
    // outcome is unknown: the entry was in its log.
    let answer = tokio::time::timeout(WAIT_LIMIT, stranded).await.expect("an answer once the old leader stepped down");
    assert_eq!(answer.expect("the proposer task"), Err(ProposeFailure::OutcomeUnknown));
    assert_ne!(cluster.status(old).role, Some(Role::Leader));

    // On heal the new leader's log overwrites the stranded entry, and everyone converges.
    cluster.network.recover();
    assert_eq!(cluster.wait_converged(&all, 2).await, ["before", "after"]);
    cluster.wait_until("the old leader follows the new one", |c| c.status(old).leader_id == new).await;
    assert_eq!(cluster.write(&all, "healed").await, Ok(ListAnswer::Appended(2)));
    assert_eq!(cluster.wait_converged(&all, 3).await, ["before", "after", "healed"]);
}

#[tokio::test(start_paused = true)]
async fn a_follower_cut_off_past_the_kept_log_catches_up_by_snapshot() {
    let cluster = TestCluster::start(3, RaftOptions { snapshot_every: 5, keep_entries: 2, ..options() });
    let all = [1, 2, 3];
    let leader = cluster.wait_for_leader(&all).await;
    let behind = others(&all, leader)[0];
    // Cut both ways (not isolated: the leader keeps its quorum with the third server).
    cluster.network.cut(leader, behind);
    cluster.network.cut(behind, leader);
    let rest = others(&all, behind);
    for i in 0..20 {
        cluster.write(&rest, &format!("entry {i}")).await.expect("committed");
    }
    let written = cluster.wait_converged(&rest, 20).await;
    assert_eq!(cluster.network.delivered(behind, MessageType::MsgSnapshot), 0);
    assert!(cluster.list(behind).is_empty());

    cluster.network.recover();
    assert_eq!(cluster.wait_converged(&all, 20).await, written);
    assert!(
        cluster.network.delivered(behind, MessageType::MsgSnapshot) >= 1,
        "the leader kept only 2 entries behind its snapshot: the follower must have been sent a snapshot"
    );
    // And it goes on from the log after the snapshot.
    cluster.write(&all, "next").await.expect("committed");
    cluster.wait_converged(&all, 21).await;
}

#[tokio::test(start_paused = true)]
async fn servers_are_added_and_removed_through_proposals() {
    let mut cluster = TestCluster::start(3, options());
    let all = [1, 2, 3];
    cluster.write(&all, "one").await.expect("committed");

    // A bad address is refused before it reaches the log.
    let refused = cluster.propose(&all, Proposal::AddVoter { id: 4, address: String::new() }).await;
    assert!(matches!(refused, Ok(ListAnswer::Refused(_))), "{refused:?}");

    // Add server 4: it starts empty and gets the state from the leader.
    cluster.launch(4, Bootstrap::Join);
    let added = cluster.propose(&all, Proposal::AddVoter { id: 4, address: address(4) }).await;
    assert_eq!(added, Ok(ListAnswer::MembershipChanged));
    let four = [1, 2, 3, 4];
    assert_eq!(cluster.wait_converged(&four, 1).await, ["one"]);
    cluster.wait_until("every server counts 4 voters", |c| four.iter().all(|id| c.voters(*id) == four)).await;
    assert_eq!(cluster.handle(4).state().state.members().len(), 4, "the membership is replicated state");
    assert_eq!(cluster.transport(4).known_peers().len(), 3, "the new server learned its peers' addresses");
    cluster.write(&four, "two").await.expect("committed");
    assert_eq!(cluster.wait_converged(&four, 2).await, ["one", "two"]);

    // Remove the leader: it goes quiet, and the three others elect a new one and go on.
    let leader = cluster.wait_for_leader(&four).await;
    let removed = cluster.propose(&four, Proposal::RemoveVoter { id: leader }).await;
    assert_eq!(removed, Ok(ListAnswer::MembershipChanged));
    let rest = others(&four, leader);
    cluster.wait_until("the removed server knows it", |c| c.status(leader).removed).await;
    let new = cluster.wait_for_leader(&rest).await;
    assert_ne!(new, leader);
    cluster.write(&rest, "three").await.expect("committed");
    assert_eq!(cluster.wait_converged(&rest, 3).await, ["one", "two", "three"]);
    for id in &rest {
        assert_eq!(cluster.voters(*id), rest, "server {id}");
        assert!(!cluster.handle(*id).state().state.members().contains_key(&leader));
        assert!(!cluster.transport(*id).known_peers().contains_key(&leader), "server {id} forgot the removed one");
    }
    // The removed server takes no proposals and applied nothing after its removal.
    let refused = cluster.handle(leader).propose(Proposal::Command("late".into())).await;
    assert!(matches!(refused, Err(ProposeFailure::NotLeader { .. })), "{refused:?}");
    assert_eq!(cluster.list(leader), ["one", "two"]);
}

#[tokio::test(start_paused = true)]
async fn lost_messages_and_moving_partitions_never_make_servers_disagree() {
    let cluster = TestCluster::start(5, options());
    let all = [1, 2, 3, 4, 5];
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        // A fifth of all messages lost, nearly all on two links (one way); every twenty writes
        // the leader is cut off for ten.
        if i % 10 == 0 {
            cluster.network.recover();
            cluster.network.lose_everywhere(0.2);
            cluster.network.lose(1, 2, 0.9);
            cluster.network.lose(3, 1, 0.9);
            if i % 20 == 0 {
                let leader = cluster.wait_for_leader(&all).await;
                cluster.network.isolate(leader);
            }
        }
        let entry = format!("entry {i}");
        let reachable: Vec<u64> = all.iter().copied().filter(|id| !cluster.network.is_isolated(*id)).collect();
        // An unknown outcome is part of the game: the entry may or may not be applied.
        if let Ok(ListAnswer::Appended(position)) = cluster.write(&reachable, &entry).await {
            acknowledged.push((position, entry));
        }
    }
    cluster.network.recover();
    // A last write commits everything before it (a leader commits only entries of its term).
    let last = cluster.write(&all, "last").await;
    let Ok(ListAnswer::Appended(position)) = last else { panic!("the last write failed: {last:?}") };
    let list = cluster.wait_converged(&all, position + 1).await;
    assert!(acknowledged.len() >= 30, "only {} of 40 writes were acknowledged", acknowledged.len());
    for (position, entry) in &acknowledged {
        assert_eq!(list.get(*position), Some(entry), "an acknowledged write is where its answer said, on every server");
    }
}

#[tokio::test(start_paused = true)]
async fn a_restarted_server_resumes_from_its_snapshot_and_log() {
    let mut cluster = TestCluster::start(3, RaftOptions { snapshot_every: 4, keep_entries: 2, ..options() });
    let all = [1, 2, 3];
    for i in 0..10 {
        cluster.write(&all, &format!("entry {i}")).await.expect("committed");
    }
    let written = cluster.wait_converged(&all, 10).await;
    let follower = others(&all, cluster.wait_for_leader(&all).await)[0];
    let applied = cluster.status(follower).applied;
    // Isolated, it can get its state back only from its own disk.
    cluster.network.isolate(follower);
    cluster.restart(follower).await;
    let restored = cluster.list(follower);
    assert!(restored.len() < written.len() && written.starts_with(&restored), "starts from its snapshot: {restored:?}");
    cluster.wait_until("the restarted server re-applied its log", |c| c.status(follower).applied >= applied).await;
    assert_eq!(cluster.list(follower), written);

    cluster.network.recover();
    cluster.write(&all, "after the restart").await.expect("committed");
    cluster.wait_converged(&all, 11).await;
    assert_eq!(cluster.network.delivered(follower, MessageType::MsgSnapshot), 0, "caught up from its own log, no snapshot needed");
}

#[tokio::test(start_paused = true)]
async fn a_follower_that_stops_hearing_the_leader_does_not_disrupt_it() {
    let cluster = TestCluster::start(3, options());
    let all = [1, 2, 3];
    let leader = cluster.wait_for_leader(&all).await;
    let term = cluster.status(leader).term;
    let deaf = others(&all, leader)[0];
    // One way: the follower still reaches the leader, but hears nothing from it.
    cluster.network.cut(leader, deaf);
    // Over ten election timeouts it campaigns again and again; pre-vote and check quorum make
    // the two others, which hear their leader, refuse it, so no term is ever bumped.
    let window = options().tick * (10 * options().election_ticks as u32);
    tokio::time::sleep(window).await;
    cluster.write(&all, "while deaf").await.expect("committed");
    for id in all {
        assert_eq!(cluster.status(id).term, term, "server {id} moved to a newer term");
    }
    assert_eq!(cluster.leader_among(&all), Some(leader));
    assert!(cluster.list(deaf).is_empty());

    cluster.network.recover();
    assert_eq!(cluster.wait_converged(&all, 1).await, ["while deaf"]);
    assert_eq!(cluster.status(leader).term, term);
}

/// Group commit: proposals handed to the loop one after another without waiting (as the
/// leader's duties propose a round) enter the log in that order, and the loop appends many per
/// `Ready`, so far fewer appends reach a follower than there are proposals.
#[tokio::test(start_paused = true)]
async fn proposals_submitted_together_keep_their_order_and_share_appends() {
    let cluster = TestCluster::start(3, options());
    let all = [1, 2, 3];
    let leader = cluster.wait_for_leader(&all).await;
    let follower = others(&all, leader)[0];
    let before = cluster.network.delivered(follower, MessageType::MsgAppend);
    submit_together(cluster.handle(leader), "e", 200, 0).await;
    let appends = cluster.network.delivered(follower, MessageType::MsgAppend) - before;
    assert!(appends <= 5, "200 proposals took {appends} appends to a follower");
    let log = cluster.wait_converged(&all, 200).await;
    assert_eq!(log.first().map(String::as_str), Some("e0"));
    assert_eq!(log.last().map(String::as_str), Some("e199"));
}

/// A leader says it has caught up only once it has applied an entry of its own term (then its
/// state holds everything earlier leaders committed); followers never say so.
#[tokio::test(start_paused = true)]
async fn a_leader_is_caught_up_once_it_applied_an_entry_of_its_term() {
    let mut cluster = TestCluster::start(3, options());
    let all = [1, 2, 3];
    cluster.write(&all, "a").await.expect("committed");
    let old = cluster.wait_for_leader(&all).await;
    cluster.wait_until("the leader has caught up", |c| c.status(old).leader_caught_up).await;
    for id in others(&all, old) {
        assert!(!cluster.status(id).leader_caught_up, "follower {id}");
    }
    // A new leader in a new term catches up too, and holds what the old one committed.
    cluster.network.isolate(old);
    let majority = others(&all, old);
    let new = cluster.wait_for_leader(&majority).await;
    cluster.wait_until("the new leader has caught up", |c| c.status(new).leader_caught_up).await;
    let status = cluster.status(new);
    assert!(status.applied >= status.commit, "{status:?}");
    assert_eq!(cluster.list(new), ["a"]);
    cluster.network.recover();
    cluster.restart(old).await;
}

/// A follower hands its callers' commands to the leader through Raft (`MsgPropose` on the
/// peer link) and answers each from its own apply of the entry.
#[tokio::test(start_paused = true)]
async fn a_follower_proposes_through_raft_and_answers_from_its_own_apply() {
    let cluster = TestCluster::start(3, options());
    let all = [1, 2, 3];
    let (leader, follower) = leader_and_a_follower_hearing_it(&cluster, &all).await;
    let before = cluster.network.delivered(leader, MessageType::MsgPropose);
    let answer = tokio::time::timeout(WAIT_LIMIT, cluster.handle(follower).propose(Proposal::Command("via follower".into()))).await;
    assert_eq!(answer.expect("answered"), Ok(ListAnswer::Appended(0)));
    assert_eq!(cluster.network.delivered(leader, MessageType::MsgPropose) - before, 1);
    assert_eq!(cluster.list(follower), ["via follower"], "answered once applied on the follower itself");
    assert_eq!(cluster.wait_converged(&all, 1).await, ["via follower"]);

    // Commands a follower's loop takes in one round go to the leader in one message.
    let before = cluster.network.delivered(leader, MessageType::MsgPropose);
    submit_together(cluster.handle(follower), "f", 100, 1).await;
    let messages = cluster.network.delivered(leader, MessageType::MsgPropose) - before;
    assert!(messages <= 5, "100 commands took {messages} messages to the leader");
}

/// A follower's proposal lost on the way to the leader is answered `OutcomeUnknown` within
/// two election timeouts, never left waiting; and a follower that no longer hears a leader
/// answers `NotLeader` at once, which its caller retries.
#[tokio::test(start_paused = true)]
async fn a_follower_proposal_that_is_lost_or_has_no_leader_to_go_to_gets_an_answer() {
    let cluster = TestCluster::start(3, options());
    let all = [1, 2, 3];
    let (leader, follower) = leader_and_a_follower_hearing_it(&cluster, &all).await;
    // It still hears the leader, but nothing it sends arrives.
    cluster.network.cut(follower, leader);
    let started = tokio::time::Instant::now();
    let lost = cluster.handle(follower).propose(Proposal::Command("lost".into())).await;
    assert_eq!(lost, Err(ProposeFailure::OutcomeUnknown));
    let limit = options().tick * (2 * options().election_ticks as u32 + 1);
    assert!(started.elapsed() <= limit, "answered after {:?}", started.elapsed());
    assert!(cluster.list(leader).is_empty());

    // The leader goes silent: past two heartbeats the follower no longer sends it anything.
    // (Five ticks: the last heartbeat may land just after the cut, and the follower's ticks
    // are not in phase with this sleep; an election takes ten at least.)
    cluster.network.recover();
    cluster.network.isolate(leader);
    tokio::time::sleep(options().tick * 5).await;
    assert_eq!(cluster.status(follower).leader_id, leader, "no election yet");
    let refused = cluster.handle(follower).propose(Proposal::Command("nowhere".into())).await;
    assert!(matches!(refused, Err(ProposeFailure::NotLeader { .. })), "{refused:?}");
    // Once the others elect a new leader, the same follower's proposals commit through it.
    let majority = others(&all, leader);
    cluster.wait_for_leader(&majority).await;
    assert_eq!(cluster.write(&majority, "after").await, Ok(ListAnswer::Appended(0)));
}
