//! The timeouts, keepalive and expected peer of each kind of client connection, side by side.

use std::time::Duration;

/// Who a connection is made to, and so which name its certificate must carry.
///
/// Certificates are checked against a fixed name per role (Nomad's `server.<region>.nomad`
/// scheme), not the dialled address: servers and agents are reached at addresses that change
/// (DHCP, NAT, `--listen 0.0.0.0`), and what matters is that the peer is a server (or an agent)
/// of this cluster, which only the cluster CA can say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A `sched server` (or `sched dev`).
    Server,
    /// A node agent (its log API).
    Agent,
}

/// The name every server certificate carries (besides its own addresses).
pub const SERVER_NAME: &str = "server.sched";
/// The name every agent certificate carries (besides its own address).
pub const AGENT_NAME: &str = "agent.sched";

impl Peer {
    /// The name the peer's certificate must be valid for.
    pub fn certificate_name(self) -> &'static str {
        match self {
            Peer::Server => SERVER_NAME,
            Peer::Agent => AGENT_NAME,
        }
    }
}

/// HTTP/2 pings on an open connection, so a peer that vanishes without a reset (power loss, a
/// partition) ends the connection instead of leaving calls hanging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// How often a ping is sent.
    pub interval: Duration,
    /// How long an unanswered ping takes to close the connection.
    pub timeout: Duration,
    /// Ping also while no call is open.
    pub while_idle: bool,
}

/// The timeouts and keepalive of one kind of client connection, and who is at the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Who is called (a server or an agent): the name its certificate must carry.
    pub peer: Peer,
    /// How long establishing the connection (TCP and the TLS handshake) may take.
    pub connect_timeout: Duration,
    /// Every call on the channel fails after this long; `None` for calls that may stay open
    /// (streams), which rely on keepalive instead.
    pub request_timeout: Option<Duration>,
    /// Pings on the open connection; `None` sends none.
    pub keepalive: Option<Keepalive>,
}

impl Profile {
    /// A `sched` command's call to a server: a 2 s connect, then 10 s for the answer (a server
    /// that does not answer is given up and, when the call is safe to repeat, the next tried).
    pub const CLI_CALL: Profile = Profile {
        peer: Peer::Server,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Some(Duration::from_secs(10)),
        keepalive: None,
    };

    /// A `sched` command's stream that may stay open for long (`sched logs -f`): no call
    /// timeout, pings every 10 s so a server that vanishes ends the stream.
    pub const CLI_STREAM: Profile = Profile {
        peer: Peer::Server,
        connect_timeout: Duration::from_secs(2),
        request_timeout: None,
        keepalive: Some(Keepalive { interval: Duration::from_secs(10), timeout: Duration::from_secs(5), while_idle: false }),
    };

    /// An agent's session with a server (registration, heartbeats, reports, the assignment and
    /// route streams). A server cut off the network sends no RST: without pings every call
    /// would hang for minutes and the node would be marked down; with them a dead connection
    /// is noticed within about 5 s.
    pub const AGENT_TO_SERVER: Profile = Profile {
        peer: Peer::Server,
        connect_timeout: Duration::from_secs(2),
        request_timeout: None,
        keepalive: Some(Keepalive { interval: Duration::from_secs(2), timeout: Duration::from_secs(3), while_idle: true }),
    };

    /// A server's channel to another server: the Raft message stream, snapshots, proposals and
    /// requests forwarded to the leader. A 1 s connect; each caller bounds its calls itself (a
    /// snapshot, a proposal and a forwarded request each have their own deadline). The Raft
    /// stream lives as long as the connection, so pings every 10 s (5 s to answer, as the
    /// servers' own) notice a peer cut off the network, which sends no RST, and the stream is
    /// opened again; Raft itself notices sooner (its queue to the peer fills and it backs off).
    /// Not shorter: a busy server that answers a ping late would lose every call on the
    /// connection.
    pub const SERVER_TO_SERVER: Profile = Profile {
        peer: Peer::Server,
        connect_timeout: Duration::from_secs(1),
        request_timeout: None,
        keepalive: Some(Keepalive { interval: Duration::from_secs(10), timeout: Duration::from_secs(5), while_idle: true }),
    };

    /// A server's call to a node agent's log API (`sched logs`): a 2 s connect, so an
    /// unreachable node becomes an error line quickly, and pings every 10 s so a node that
    /// vanishes mid-follow ends its stream instead of hanging it.
    pub const SERVER_TO_AGENT: Profile = Profile {
        peer: Peer::Agent,
        connect_timeout: Duration::from_secs(2),
        request_timeout: None,
        keepalive: Some(Keepalive { interval: Duration::from_secs(10), timeout: Duration::from_secs(5), while_idle: true }),
    };
}
