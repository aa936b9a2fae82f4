//! The thread the leader's looks run on. A look runs the controllers over a copy of the whole
//! state and drops the copy: milliseconds on a large state. Run on an async worker, it held
//! that worker the whole time, and requests and Raft messages waited behind it; a write that
//! met a look took twice as long (commit p99 at one client above etcd's). Here a look runs on
//! a thread of its own, at a lower CPU priority ([`LOOK_NICE`]) than the threads that answer
//! requests and run Raft: on a busy machine it takes the CPU they leave, and on an idle one it
//! runs as fast as before. What it decides is the same; only when it is decided moves.

use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::controller::{Controller, Snapshot, run_controllers};
use crate::state::Command;

/// How much lower the look thread's priority is than the server's other threads (Linux
/// `nice` steps: at +5, about a third of a default thread's share of a busy CPU).
const LOOK_NICE: i32 = 5;

/// The thread's name (in `top -H`, `/proc/PID/task/*/comm`).
const THREAD_NAME: &str = "sched-look";

type Controllers = Vec<Box<dyn Controller>>;

struct Job {
    controllers: Controllers,
    snapshot: Snapshot,
    done: oneshot::Sender<(Controllers, Vec<Command>)>,
}

/// The leader's look thread; it ends when this is dropped.
pub struct LookThread {
    jobs: mpsc::Sender<Job>,
}

impl LookThread {
    pub fn start() -> std::io::Result<LookThread> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new().name(THREAD_NAME.into()).spawn(move || {
            // On Linux a priority set with pid 0 is the calling thread's alone.
            if let Err(e) = rustix::process::nice(LOOK_NICE) {
                tracing::warn!("the leader's look thread keeps its priority (nice +{LOOK_NICE}: {e})");
            }
            for Job { mut controllers, snapshot, done } in queue {
                let commands = run_controllers(&mut controllers, snapshot);
                // The leader loop may be gone (the server is stopping): nothing to tell.
                let _ = done.send((controllers, commands));
            }
        })?;
        Ok(LookThread { jobs })
    }

    /// Runs `controllers` on `snapshot` on the look thread, and gives them back with the
    /// commands they want (see [`run_controllers`]). The snapshot is dropped there too.
    pub async fn look(&self, controllers: Controllers, snapshot: Snapshot) -> (Controllers, Vec<Command>) {
        let (done, result) = oneshot::channel();
        self.jobs.send(Job { controllers, snapshot, done }).expect("the look thread runs while its LookThread lives");
        result.await.expect("the look thread answers every look (a controller panicked?)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::leader_controllers;

    #[tokio::test]
    async fn a_look_on_the_thread_decides_as_one_in_place() {
        let mut snapshot = Snapshot { state: crate::test_fixtures::cluster(2, 1000), now_ms: 1_000, term: 2, ..Snapshot::default() };
        let spec = crate::test_fixtures::spec("quotes:1", 3, 250);
        snapshot
            .state
            .apply(Command::ApplyService { spec, image_digest: String::new(), now_ms: 0, unresolved_reason: String::new() })
            .unwrap();
        let expected = run_controllers(&mut leader_controllers(10_000), snapshot.clone());
        let thread = LookThread::start().unwrap();
        let (controllers, commands) = thread.look(leader_controllers(10_000), snapshot.clone()).await;
        assert_eq!(commands, expected);
        assert!(!commands.is_empty(), "three tasks to place: {commands:?}");
        assert_eq!(controllers.len(), leader_controllers(10_000).len(), "the controllers come back");
        // The same controllers look again (their memory carries over).
        let (_, again) = thread.look(controllers, snapshot).await;
        assert_eq!(again.len(), expected.len());
    }

    /// The `nice` value of each of this process's threads named `name`, and of the process.
    fn nice_of_threads(name: &str) -> (Vec<i64>, i64) {
        // Field 19 of `stat`, counted after the parenthesized command (which may hold spaces).
        let nice = |stat: &str| stat.rsplit_once(')').unwrap().1.split_whitespace().nth(16).unwrap().parse::<i64>().unwrap();
        let mut threads = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            // A thread may end between the listing and the read.
            let (Ok(comm), Ok(stat)) = (std::fs::read_to_string(dir.join("comm")), std::fs::read_to_string(dir.join("stat"))) else {
                continue;
            };
            if comm.trim_end() == name {
                threads.push(nice(&stat));
            }
        }
        (threads, nice(&std::fs::read_to_string("/proc/self/stat").unwrap()))
    }

    #[tokio::test]
    async fn looks_run_at_a_lower_priority_than_the_process() {
        let thread = LookThread::start().unwrap();
        // The thread lowers its priority before it takes its first look.
        thread.look(Vec::new(), Snapshot::default()).await;
        let (threads, process) = nice_of_threads(THREAD_NAME);
        assert!(!threads.is_empty(), "no thread named {THREAD_NAME}");
        for nice in threads {
            assert_eq!(nice, (process + i64::from(LOOK_NICE)).min(19), "the look thread's nice, the process's being {process}");
        }
    }
}
