//! The census: what of the agent's is on the host now, grouped by task id, for the
//! [reaper](super::reaper) to match to the tasks the node knows. All I/O, no decision: task dirs
//! (and their exit records), containers under the runtime root, shim processes (found in
//! `/proc` by their command line, so a shim whose task dir is gone is found too), cgroups under
//! the cgroup parent in every hierarchy, rootfs dirs, host id ranges, and the task network's census (netns pins,
//! address allocations, links on the bridge, published ports).

use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime::state::Status;

use super::reaper::{Census, ContainerFound, Found, TaskDir};
use super::task_jobs::TaskHost;
use crate::error::{AgentError, Result};

/// Takes the census of the node `host` acts on.
pub(super) async fn take(host: &TaskHost) -> Result<Census> {
    let mut census = Census::default();
    let driver = &host.driver;
    fn entry<'a>(census: &'a mut Census, id: &str) -> &'a mut Found {
        census.tasks.entry(id.to_string()).or_default()
    }
    for id in driver.list()? {
        let exited = runtime::shim::read_exit(&driver.task_dir(&id)).map(|e| e.is_some()).unwrap_or(false);
        entry(&mut census, &id).task_dir = Some(TaskDir { exited });
    }
    for (id, status) in driver.containers()? {
        entry(&mut census, &id).container = Some(match status {
            Some(Status::Stopped) => ContainerFound::Stopped,
            Some(_) => ContainerFound::Alive,
            None => ContainerFound::Unrecorded,
        });
    }
    for (pid, id) in shims(&driver.config().state_root) {
        entry(&mut census, &id).shims.push(pid);
    }
    // A shim its task dir names counts too, however its command line reads.
    for (id, found) in census.tasks.iter_mut() {
        if found.task_dir.is_some()
            && let Some(pid) = driver.shim_running(id)
            && !found.shims.contains(&pid)
        {
            found.shims.push(pid);
        }
        found.shim_age = found.shims.iter().filter_map(|pid| process_age(*pid)).min();
    }
    for (id, dirs) in cgroups(&driver.config().cgroup_parent)? {
        entry(&mut census, &id).cgroup_dirs = dirs;
    }
    for id in driver.rootfs_ids()? {
        entry(&mut census, &id).rootfs = true;
    }
    for id in driver.id_range_holders() {
        entry(&mut census, &id).id_range = true;
    }
    if let Some(network) = &host.network {
        let net = network.census().await?;
        for id in net.pins.iter().chain(net.allocations.iter().map(|a| &a.task_id)) {
            entry(&mut census, id).network = true;
        }
        census.task_veths = net.allocations.iter().map(|a| a.veth_host_name.clone()).collect();
        census.allocated = net.allocations.iter().map(|a| a.ip).collect();
        census.bridge_ports = net.bridge_ports;
        census.published = net.published;
    }
    Ok(census)
}

/// Every live shim process of runtime root `state_root`: `(pid, task id)`.
pub(super) fn shims(state_root: &Path) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found: Vec<(i32, String)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(|pid| shim_task_of(pid, state_root).map(|id| (pid, id)))
        .collect();
    found.sort();
    found
}

/// The task whose shim process `pid` is (under runtime root `state_root`), if it is a live one.
/// The root on its command line may be spelled otherwise (an agent started with a relative
/// data dir): it is compared resolved, from the shim's working directory.
pub(super) fn shim_task_of(pid: i32, state_root: &Path) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let (root, id) = shim_args(&cmdline)?;
    let same_root = root == state_root || {
        let resolved = Path::new(&format!("/proc/{pid}/cwd")).join(&root).canonicalize().ok();
        resolved.is_some() && resolved == state_root.canonicalize().ok()
    };
    let alive = runtime::state::process_start_time(pid).is_some_and(|(_, zombie)| !zombie);
    (same_root && alive).then_some(id)
}

/// The runtime root and task id of a shim's command line (`/proc/PID/cmdline`, NUL-separated):
/// `RUNTIME --root STATE_ROOT shim [OPTIONS] ID`, the way the task driver starts it (the shim
/// daemon is a fork of that command, so it keeps the line). `None` for any other process.
fn shim_args(cmdline: &[u8]) -> Option<(PathBuf, String)> {
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<&[u8]> = cmdline.strip_suffix(b"\0").unwrap_or(cmdline).split(|b| *b == 0).collect();
    match args.as_slice() {
        [_, b"--root", root, b"shim", .., id] if !id.starts_with(b"-") => {
            Some((PathBuf::from(std::ffi::OsStr::from_bytes(root)), String::from_utf8_lossy(id).into_owned()))
        }
        _ => None,
    }
}

/// How long ago process `pid` started (from its start time in `/proc/PID/stat` and the
/// uptime), if it exists.
fn process_age(pid: i32) -> Option<Duration> {
    let (start_ticks, _) = runtime::state::process_start_time(pid)?;
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|t| *t > 0)? as f64;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs_f64((uptime - start_ticks as f64 / ticks_per_second).max(0.0)))
}

/// Every cgroup directly under `parent` in every hierarchy on the host, by name (the task id),
/// with its directories.
fn cgroups(parent: &str) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let hierarchies = runtime::cgroups::host_hierarchies()?;
    let mut by_id: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    for h in hierarchies {
        let dir = h.mount_point.join(parent.trim_start_matches('/'));
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(AgentError::io(format!("list cgroups under {}", dir.display()), e)),
        };
        for e in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            by_id.entry(e.file_name().to_string_lossy().into_owned()).or_default().push(e.path());
        }
    }
    Ok(by_id.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shims_are_told_by_their_command_line_with_root_and_task() {
        let line = |args: &[&str]| args.iter().map(|a| format!("{a}\0")).collect::<String>().into_bytes();
        /// A command line, and the (root, task) it names if it is a shim.
        type Case<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>);
        let cases: &[Case] = &[
            (
                &[
                    "/usr/bin/sched-runtime",
                    "--root",
                    "/var/lib/sched/runtime",
                    "shim",
                    "--bundle",
                    "/b",
                    "--task-dir",
                    "/d",
                    "--max-log-bytes",
                    "10",
                    "web-1",
                ],
                Some(("/var/lib/sched/runtime", "web-1")),
            ),
            (&["sched-runtime", "--root", "data/runtime", "shim", "t2"], Some(("data/runtime", "t2"))),
            (&["sched-runtime", "--root", "/var/lib/sched/runtime", "exec", "t4", "--", "true"], None),
            (&["sched-runtime", "--root", "/var/lib/sched/runtime", "shim"], None),
            (&["sleep", "3600"], None),
        ];
        for (args, want) in cases {
            let got = shim_args(&line(args));
            assert_eq!(got, want.map(|(root, id)| (PathBuf::from(root), id.to_string())), "{args:?}");
        }
    }
}
