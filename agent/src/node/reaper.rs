//! The reaper's decision, pure: from what is on the host (the [`Census`]) and the tasks the node
//! knows, what to remove, and what to recover, each with the reason. Table tested; the census is
//! taken in [`census`](super::census), the plan carried out in [`reaping`](super::reaping).
//!
//! Per task id the agent may own on the host: a task dir, a container under its runtime root, a
//! shim process, a cgroup under its cgroup parent (in every hierarchy), a rootfs (overlay mount),
//! a host id range for its user namespace ([`crate::task::id_ranges`]) and a task network (netns
//! pin, veth, address, published ports). Besides those, links on the
//! bridge named like a task veth and published ports are matched to the address allocations.
//!
//! The rules, for an id with no job in flight (a start, a stop, a reap: those own it):
//! - **A shim alive beside a task dir but no container state** is starting the container (or
//!   has just deleted it and is exiting): left alone, the next round sees how it ended — for
//!   [`SHIM_START_GRACE`] from the shim's start. Past that, the container's state is gone (a
//!   shim supervises a container nothing can load): the shim and the cgroup go, like a cgroup
//!   without container state always does.
//! - **A task dir with an exit record or a container** is the [plan](super::plan)'s: it stops,
//!   releases and removes such tasks. Two things it cannot see are the reaper's: an assigned
//!   task whose container is alive but whose shim is gone (nothing would record its exit or
//!   read its output) is killed, so that it reads as exited (code 255) and is reported, and the
//!   servers replace it; and a cgroup with no container state is killed and removed.
//! - **A task dir without exit record, container or shim** is a start that never reached its
//!   shim. An assigned one is the plan's to start again (which clears the dir first), but a
//!   cgroup or container dir it left would break that start: those go. An unassigned one goes
//!   whole.
//! - **No task dir**: nothing records the task any more, so every piece of it goes, assigned or
//!   not (an assigned one then starts again from scratch).
//! - **Veths and ports**: a link on the bridge named like a task veth (`veth` + 8 hex digits)
//!   that no address allocation holds, and a published port to an address no task holds.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::network::{PublishedPort, is_task_veth_name};

/// What is on the host, as the reaper sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Census {
    /// Everything found under some task id.
    pub tasks: BTreeMap<String, Found>,
    /// The links attached to the node bridge.
    pub bridge_ports: Vec<String>,
    /// The host veths of the address allocations.
    pub task_veths: Vec<String>,
    /// The addresses tasks hold.
    pub allocated: Vec<Ipv4Addr>,
    /// Every published port.
    pub published: Vec<PublishedPort>,
}

/// What the census found of one task id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    /// Its dir under `DATA_DIR/tasks`.
    pub task_dir: Option<TaskDir>,
    /// Its container under the runtime root.
    pub container: Option<ContainerFound>,
    /// Live shim processes started for it under this runtime root.
    pub shims: Vec<i32>,
    /// How long ago the youngest of them started.
    pub shim_age: Option<Duration>,
    /// Its cgroup's directories under the cgroup parent, in every hierarchy.
    pub cgroup_dirs: Vec<PathBuf>,
    /// Whether it has a rootfs dir (with or without its overlay mounted).
    pub rootfs: bool,
    /// Whether it holds a host id range for its user namespace.
    pub id_range: bool,
    /// Whether it has a netns pin or an address allocation.
    pub network: bool,
}

/// A task dir as the reaper sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskDir {
    /// It holds an exit record.
    pub exited: bool,
}

/// A container's state under the runtime root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerFound {
    /// Its init runs (or waits to be started, or is paused).
    Alive,
    /// Its init has exited; the container is not deleted yet.
    Stopped,
    /// A state dir without `state.json`: a create that did not finish, or a delete cut short.
    Unrecorded,
}

/// One thing removed from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A shim process (SIGKILL).
    Shim(i32),
    /// The container, deleted with force (everything in its cgroup is killed first).
    Container,
    /// A container state dir without `state.json`.
    ContainerDir,
    /// The cgroup: its processes killed, its directories removed.
    Cgroup(Vec<PathBuf>),
    /// The rootfs: unmounted, its dir and upper layer deleted.
    Rootfs,
    /// The host id range of its user namespace, given back (after the processes and the upper
    /// dir that used its ids are gone).
    IdRange,
    /// The task network: published ports, veth, netns pin, address.
    Network,
    /// The task dir with its records and logs.
    TaskDir,
}

/// What is done for a task id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskAction {
    /// These pieces go, in this order.
    Remove(Vec<Piece>),
    /// The container's processes are killed and its state kept, so it reads as exited.
    KillUnsupervised,
}

/// Why something is reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// No assigned task and no job in flight owns it.
    Unassigned,
    /// The task is assigned but its task dir is gone.
    RecordsLost,
    /// Processes or a cgroup of a task whose container state is gone.
    NoContainer,
    /// An assigned task's container runs but its shim is gone.
    ShimGone,
    /// A task veth on the bridge that no address allocation holds.
    StrayVeth,
    /// A published port to an address no task holds.
    StrayPort,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Why::Unassigned => "no task assigned to this node owns it and no start or stop of it is in flight",
            Why::RecordsLost => "its task is assigned but its task dir is gone, so nothing records it: it starts again from scratch",
            Why::NoContainer => "no container state owns it (a start cut short or runtime state lost), so nothing would ever stop it",
            Why::ShimGone => "its shim is gone, so nothing records its exit or reads its output: killed, to be reported exited",
            Why::StrayVeth => "a task veth on the bridge that no task network holds",
            Why::StrayPort => "it forwards to an address no task holds",
        })
    }
}

/// What is done for one task id, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskReap {
    pub task: String,
    pub action: TaskAction,
    pub why: Why,
}

/// Everything one round of the reaper does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapPlan {
    pub tasks: Vec<TaskReap>,
    /// Stray veths to delete.
    pub veths: Vec<String>,
    /// Stray published ports to unpublish.
    pub ports: Vec<u16>,
}

impl ReapPlan {
    /// Whether the round has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.veths.is_empty() && self.ports.is_empty()
    }
}

/// The round's plan: `assigned` are the tasks the servers assign to this node, `in_flight` the
/// ids with a job (start, stop, reap) in flight, which are never touched.
pub fn plan(census: &Census, assigned: &BTreeSet<String>, in_flight: &HashSet<String>) -> ReapPlan {
    let tasks = census
        .tasks
        .iter()
        .filter(|(id, _)| !in_flight.contains(*id))
        .filter_map(|(id, found)| decide(found, assigned.contains(id)).map(|(action, why)| TaskReap { task: id.clone(), action, why }))
        .collect();
    let veths = census.bridge_ports.iter().filter(|name| is_task_veth_name(name) && !census.task_veths.contains(name)).cloned().collect();
    let ports = census.published.iter().filter(|p| !census.allocated.contains(&p.task_ip)).map(|p| p.host_port).collect();
    ReapPlan { tasks, veths, ports }
}

/// How long a shim may go without container state and still be taken for one that is
/// creating its container (or exiting after deleting it): both take a moment, not a minute.
pub const SHIM_START_GRACE: Duration = Duration::from_secs(60);

/// The rules of the module docs for one task id.
fn decide(found: &Found, assigned: bool) -> Option<(TaskAction, Why)> {
    let recorded = matches!(found.container, Some(ContainerFound::Alive | ContainerFound::Stopped));
    let Some(dir) = found.task_dir else {
        let pieces = everything(found);
        let why = if assigned { Why::RecordsLost } else { Why::Unassigned };
        return (!pieces.is_empty()).then_some((TaskAction::Remove(pieces), why));
    };
    if !found.shims.is_empty() && !recorded && found.shim_age.is_none_or(|age| age < SHIM_START_GRACE) {
        return None;
    }
    // Shims without container state past the grace, and cgroups without it: nothing records
    // or stops what they hold.
    let mut unowned: Vec<Piece> = if recorded { Vec::new() } else { found.shims.iter().map(|pid| Piece::Shim(*pid)).collect() };
    if !recorded && !found.cgroup_dirs.is_empty() {
        unowned.push(Piece::Cgroup(found.cgroup_dirs.clone()));
    }
    if dir.exited || recorded {
        if assigned && found.container == Some(ContainerFound::Alive) && found.shims.is_empty() {
            return Some((TaskAction::KillUnsupervised, Why::ShimGone));
        }
        return (!unowned.is_empty()).then_some((TaskAction::Remove(unowned), Why::NoContainer));
    }
    if !assigned {
        return Some((TaskAction::Remove(everything(found)), Why::Unassigned));
    }
    if found.container == Some(ContainerFound::Unrecorded) {
        unowned.insert(found.shims.len(), Piece::ContainerDir);
    }
    (!unowned.is_empty()).then_some((TaskAction::Remove(unowned), Why::NoContainer))
}

/// Every piece found, in the order they go: shims (so none records into a dir about to go),
/// the container (killing its cgroup), the cgroup, rootfs, id range, network, task dir.
fn everything(found: &Found) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = found.shims.iter().map(|pid| Piece::Shim(*pid)).collect();
    match found.container {
        Some(ContainerFound::Alive | ContainerFound::Stopped) => pieces.push(Piece::Container),
        Some(ContainerFound::Unrecorded) => pieces.push(Piece::ContainerDir),
        None => {}
    }
    if !found.cgroup_dirs.is_empty() {
        pieces.push(Piece::Cgroup(found.cgroup_dirs.clone()));
    }
    if found.rootfs {
        pieces.push(Piece::Rootfs);
    }
    if found.id_range {
        pieces.push(Piece::IdRange);
    }
    if found.network {
        pieces.push(Piece::Network);
    }
    if found.task_dir.is_some() {
        pieces.push(Piece::TaskDir);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerFound::{Alive, Stopped, Unrecorded};

    const CG: &str = "/sys/fs/cgroup/memory/sched/t";

    fn cgroup() -> Piece {
        Piece::Cgroup(vec![PathBuf::from(CG)])
    }

    /// A `Found` from a short description: `d` task dir, `e` exit record in it, `A`/`S`/`U`
    /// container alive/stopped/unrecorded, `s` a shim (pid 7) started a second ago, `o` one
    /// started past the grace, `c` a cgroup, `r` rootfs, `i` an id range, `n` network.
    fn found(text: &str) -> Found {
        let has = |c| text.contains(c);
        Found {
            task_dir: has('d').then_some(TaskDir { exited: has('e') }),
            container: if has('A') {
                Some(Alive)
            } else if has('S') {
                Some(Stopped)
            } else if has('U') {
                Some(Unrecorded)
            } else {
                None
            },
            shims: if has('s') || has('o') { vec![7] } else { vec![] },
            shim_age: if has('s') {
                Some(Duration::from_secs(1))
            } else if has('o') {
                Some(SHIM_START_GRACE)
            } else {
                None
            },
            cgroup_dirs: if has('c') { vec![PathBuf::from(CG)] } else { vec![] },
            rootfs: has('r'),
            id_range: has('i'),
            network: has('n'),
        }
    }

    /// What `decide` returns.
    type Decision = Option<(TaskAction, Why)>;

    fn remove(pieces: Vec<Piece>, why: Why) -> Decision {
        Some((TaskAction::Remove(pieces), why))
    }

    #[test]
    fn each_combination_of_pieces_and_assignment_gets_its_rule() {
        use Piece::*;
        let all = vec![Shim(7), Container, cgroup(), Rootfs, Network];
        let cases: Vec<(&str, bool, Decision)> = vec![
            // A healthy task, running or exited, is the plan's, assigned or not.
            ("dAscrn", true, None),
            ("dAscrn", false, None),
            ("dSscrn", false, None),
            ("dern", true, None),
            ("dern", false, None),
            ("dS crn", true, None),
            // A shim with a task dir and no container: starting (or just deleted it). Left alone.
            ("dsrn", false, None),
            ("dsUcrn", false, None),
            ("desrn", true, None),
            // ... unless it has been at it past the grace: a container whose state is gone.
            ("docrn", true, remove(vec![Shim(7), cgroup()], Why::NoContainer)),
            ("doUcrn", true, remove(vec![Shim(7), ContainerDir, cgroup()], Why::NoContainer)),
            ("docrn", false, remove(vec![Shim(7), cgroup(), Rootfs, Network, TaskDir], Why::Unassigned)),
            ("deorn", false, remove(vec![Shim(7)], Why::NoContainer)),
            ("dAocrn", true, None),
            // An assigned container alive without its shim: killed, to be reported exited.
            ("dAcrn", true, Some((TaskAction::KillUnsupervised, Why::ShimGone))),
            ("dAcrn", false, None),
            ("deAcrn", true, Some((TaskAction::KillUnsupervised, Why::ShimGone))),
            // A task dir with an exit record and a cgroup but no container state.
            ("decrn", false, remove(vec![cgroup()], Why::NoContainer)),
            ("decrn", true, remove(vec![cgroup()], Why::NoContainer)),
            ("de r", false, None),
            // A start that never reached its shim: assigned ones keep their dir for the plan.
            ("drn", true, None),
            ("dcrn", true, remove(vec![cgroup()], Why::NoContainer)),
            ("dUcr", true, remove(vec![ContainerDir, cgroup()], Why::NoContainer)),
            ("drn", false, remove(vec![Rootfs, Network, TaskDir], Why::Unassigned)),
            ("dUcrn", false, remove(vec![ContainerDir, cgroup(), Rootfs, Network, TaskDir], Why::Unassigned)),
            // No task dir: everything goes.
            ("Ascrn", false, remove(all.clone(), Why::Unassigned)),
            ("Ascrn", true, remove(all.clone(), Why::RecordsLost)),
            ("sc", false, remove(vec![Shim(7), cgroup()], Why::Unassigned)),
            ("Sc", false, remove(vec![Container, cgroup()], Why::Unassigned)),
            ("U", true, remove(vec![ContainerDir], Why::RecordsLost)),
            ("n", false, remove(vec![Network], Why::Unassigned)),
            ("r", false, remove(vec![Rootfs], Why::Unassigned)),
            // A host id range: the task's until its rootfs is released (the plan's release and
            // removal give it back); one nothing else records goes last but the network.
            ("dAscrin", true, None),
            ("derin", false, None),
            ("drin", true, None),
            ("drin", false, remove(vec![Rootfs, IdRange, Network, TaskDir], Why::Unassigned)),
            ("Ascrin", true, remove(vec![Shim(7), Container, cgroup(), Rootfs, IdRange, Network], Why::RecordsLost)),
            ("i", false, remove(vec![IdRange], Why::Unassigned)),
            ("i", true, remove(vec![IdRange], Why::RecordsLost)),
            ("", true, None),
        ];
        for (text, assigned, want) in cases {
            let text = text.replace(' ', "");
            assert_eq!(decide(&found(&text), assigned), want, "{text:?} assigned={assigned}");
        }
    }

    #[test]
    fn ids_with_a_job_in_flight_are_never_touched() {
        let census = Census { tasks: BTreeMap::from([("t".to_string(), found("Ascrn"))]), ..Default::default() };
        let busy = HashSet::from(["t".to_string()]);
        assert!(plan(&census, &BTreeSet::new(), &busy).is_empty());
        let plan = plan(&census, &BTreeSet::new(), &HashSet::new());
        assert_eq!(plan.tasks.len(), 1);
        assert_eq!(plan.tasks[0].why, Why::Unassigned);
    }

    #[test]
    fn only_task_veths_no_allocation_holds_and_ports_to_free_addresses_go() {
        let held = Ipv4Addr::new(10, 213, 0, 2);
        let free = Ipv4Addr::new(10, 213, 0, 9);
        let census = Census {
            bridge_ports: vec!["veth0ad50002".into(), "veth0ad50009".into(), "eth1".into(), "vethmine".into()],
            task_veths: vec!["veth0ad50002".into()],
            allocated: vec![held],
            published: vec![
                PublishedPort { host_port: 32768, task_ip: held, container_port: 80 },
                PublishedPort { host_port: 32769, task_ip: free, container_port: 80 },
            ],
            ..Default::default()
        };
        let plan = plan(&census, &BTreeSet::new(), &HashSet::new());
        assert_eq!(plan.veths, vec!["veth0ad50009".to_string()]);
        assert_eq!(plan.ports, vec![32769]);
        assert!(plan.tasks.is_empty());
    }
}
