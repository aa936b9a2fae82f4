//! An in-memory network between the Raft loops of one process, with the faults raft-rs's
//! harness injects: lossy links (a seeded random share of the messages is lost), cut links
//! (one direction), isolated servers, and recovery from all of these.
//!
//! A message that gets through is handed to the receiving loop at once (in the sender's
//! order). Each server's [`MemTransport`] reports what the gRPC transport would: a message to
//! a cut, isolated or absent server makes the peer unreachable, and a snapshot that does not
//! arrive is reported lost (a lossy link loses messages silently otherwise).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use raft::eraftpb::{Message, MessageType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::raft::transport::{Feedback, FeedbackSink, Transport};

/// Where the network delivers a server's messages (its loop's input).
type Inbox = Arc<dyn Fn(Message) + Send + Sync>;

/// The network; clones share it.
#[derive(Clone)]
pub struct MemNetwork {
    inner: Arc<Mutex<Links>>,
}

struct Links {
    inboxes: HashMap<u64, Inbox>,
    /// Cut links, as (from, to).
    cut: HashSet<(u64, u64)>,
    isolated: HashSet<u64>,
    /// Share of the messages lost, per link (from, to), else `loss`.
    link_loss: HashMap<(u64, u64), f64>,
    loss: f64,
    rng: StdRng,
    /// Messages delivered, by receiver and type.
    delivered: HashMap<(u64, MessageType), u64>,
}

/// What became of one message.
enum Fate {
    Delivered(Inbox),
    /// A lossy link lost it: no one is told, as on a real network.
    Lost,
    /// Cut, isolated or absent: the sender learns the peer is unreachable.
    Blocked,
}

impl MemNetwork {
    /// A network without faults; `seed` makes its losses repeatable.
    pub fn new(seed: u64) -> MemNetwork {
        MemNetwork {
            inner: Arc::new(Mutex::new(Links {
                inboxes: HashMap::new(),
                cut: HashSet::new(),
                isolated: HashSet::new(),
                link_loss: HashMap::new(),
                loss: 0.0,
                rng: StdRng::seed_from_u64(seed),
                delivered: HashMap::new(),
            })),
        }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, Links> {
        self.inner.lock().expect("network lock")
    }

    /// The transport server `id` sends through.
    pub fn transport(&self, id: u64) -> Arc<MemTransport> {
        Arc::new(MemTransport {
            me: id,
            network: self.clone(),
            muted: AtomicBool::new(false),
            feedback: OnceLock::new(),
            addresses: Mutex::default(),
            forgotten: Mutex::default(),
        })
    }

    /// Connects server `id`: messages to it go to `inbox`.
    pub fn attach(&self, id: u64, inbox: impl Fn(Message) + Send + Sync + 'static) {
        self.links().inboxes.insert(id, Arc::new(inbox));
    }

    /// Cuts the link from `from` to `to` (one direction).
    pub fn cut(&self, from: u64, to: u64) {
        self.links().cut.insert((from, to));
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&self, id: u64) {
        self.links().isolated.insert(id);
    }

    pub fn is_isolated(&self, id: u64) -> bool {
        self.links().isolated.contains(&id)
    }

    /// Loses this share (0.0 to 1.0) of the messages from `from` to `to`.
    pub fn lose(&self, from: u64, to: u64, share: f64) {
        self.links().link_loss.insert((from, to), share);
    }

    /// Loses this share of the messages on every link without a share of its own.
    pub fn lose_everywhere(&self, share: f64) {
        self.links().loss = share;
    }

    /// Heals every cut, isolation and loss.
    pub fn recover(&self) {
        let mut links = self.links();
        links.cut.clear();
        links.isolated.clear();
        links.link_loss.clear();
        links.loss = 0.0;
    }

    /// How many messages of this type reached `to`.
    pub fn delivered(&self, to: u64, kind: MessageType) -> u64 {
        self.links().delivered.get(&(to, kind)).copied().unwrap_or(0)
    }

    fn fate(&self, message: &Message) -> Fate {
        let mut links = self.links();
        let (from, to) = (message.from, message.to);
        if links.cut.contains(&(from, to)) || links.isolated.contains(&from) || links.isolated.contains(&to) {
            return Fate::Blocked;
        }
        let Some(inbox) = links.inboxes.get(&to).cloned() else { return Fate::Blocked };
        let loss = links.link_loss.get(&(from, to)).copied().unwrap_or(links.loss);
        if loss > 0.0 && links.rng.gen_bool(loss.min(1.0)) {
            return Fate::Lost;
        }
        *links.delivered.entry((to, message.get_msg_type())).or_default() += 1;
        Fate::Delivered(inbox)
    }
}

/// One server's side of the [`MemNetwork`].
pub struct MemTransport {
    me: u64,
    network: MemNetwork,
    muted: AtomicBool,
    feedback: OnceLock<FeedbackSink>,
    /// The addresses the loop taught it (routing is by id: kept for the tests to check).
    addresses: Mutex<BTreeMap<u64, String>>,
    /// Peers removed from the membership: like the gRPC transport, which no longer knows
    /// their address, it drops what the loop still sends them.
    forgotten: Mutex<HashSet<u64>>,
}

impl MemTransport {
    /// The peers the loop has taught this transport, with their addresses.
    pub fn known_peers(&self) -> BTreeMap<u64, String> {
        self.addresses.lock().expect("addresses lock").clone()
    }

    fn report(&self, feedback: Feedback) {
        if let Some(sink) = self.feedback.get() {
            sink.report(feedback);
        }
    }
}

impl Transport for MemTransport {
    fn send(&self, messages: Vec<Message>) {
        if self.muted.load(Ordering::SeqCst) {
            return;
        }
        for message in messages {
            debug_assert_eq!(message.from, self.me);
            let to = message.to;
            if self.forgotten.lock().expect("forgotten lock").contains(&to) {
                continue;
            }
            let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            // The network's lock is released before the delivery.
            let fate = self.network.fate(&message);
            match fate {
                Fate::Delivered(inbox) => {
                    inbox(message);
                    if snapshot {
                        self.report(Feedback::SnapshotSent { to, delivered: true });
                    }
                }
                Fate::Lost if snapshot => self.report(Feedback::SnapshotSent { to, delivered: false }),
                Fate::Lost => {}
                Fate::Blocked => {
                    if snapshot {
                        self.report(Feedback::SnapshotSent { to, delivered: false });
                    }
                    self.report(Feedback::Unreachable(to));
                }
            }
        }
    }

    fn learn(&self, id: u64, address: &str) {
        if id != self.me {
            self.addresses.lock().expect("addresses lock").insert(id, address.to_string());
            self.forgotten.lock().expect("forgotten lock").remove(&id);
        }
    }

    fn forget(&self, id: u64) {
        self.addresses.lock().expect("addresses lock").remove(&id);
        self.forgotten.lock().expect("forgotten lock").insert(id);
    }

    fn mute(&self) {
        self.muted.store(true, Ordering::SeqCst);
    }

    fn set_feedback(&self, feedback: FeedbackSink) {
        let _ = self.feedback.set(feedback);
    }
}
