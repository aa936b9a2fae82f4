//! A container's cgroup, through youki's `libcgroups`: created when the init process is added,
//! limited from `linux.resources`, removed on delete. Works on pure cgroup v2, v1 and hybrid
//! hosts (libcgroups picks the manager from what is mounted).
//!
//! Device rules are runc's, whatever the spec carries (the agent's task bundles carry none):
//! deny every device first, then the spec's `linux.resources.devices`, then libcgroups appends
//! the devices every container gets (runc's `AllowedDevices`: null, zero, full, random,
//! urandom, tty, console, ptmx, pts, tun, and mknod of any char or block device), so a spec
//! can allow more but cannot take /dev/null away. On v1 they go to `devices.deny` and
//! `devices.allow`; on v2 libcgroups (feature `cgroupsv2_devices`) compiles them into an eBPF
//! device program attached to the container's cgroup. Without the leading deny a v1 cgroup
//! inherits the host's "allow all", and v2 has no device files at all.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcgroups::common::{AnyCgroupManager, CgroupConfig, CgroupManager, ControllerOpt, FreezerState, create_cgroup_manager};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources, Spec};

use crate::error::{Context, Error, Result};

/// The parent under which containers without a `linux.cgroupsPath` get their cgroup.
pub const DEFAULT_PARENT: &str = "/sched-runtime";

/// The cgroup of one container.
pub struct ContainerCgroup {
    path: PathBuf,
    manager: AnyCgroupManager,
}

/// The cgroup path a container uses: the spec's `linux.cgroupsPath`, else
/// `/sched-runtime/<id>`. Relative paths are taken from each hierarchy's root.
pub fn cgroup_path(spec: &Spec, id: &str) -> PathBuf {
    spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()).unwrap_or_else(|| Path::new(DEFAULT_PARENT).join(id))
}

impl ContainerCgroup {
    /// Opens (without creating) the cgroup at `path`.
    pub fn open(path: &Path, id: &str) -> Result<ContainerCgroup> {
        let manager =
            create_cgroup_manager(CgroupConfig { cgroup_path: path.to_path_buf(), systemd_cgroup: false, container_name: id.to_string() })
                .map_err(|e| Error::Cgroup { path: path.to_path_buf(), reason: e.to_string() })?;
        Ok(ContainerCgroup { path: path.to_path_buf(), manager })
    }

    /// Moves `pid` into the cgroup (creating it) and applies the spec's limits.
    pub fn enter_and_limit(&self, pid: i32, resources: Option<&LinuxResources>) -> Result<()> {
        let pid = Pid::from_raw(pid);
        self.manager.add_task(pid).map_err(|e| self.error(e))?;
        let resources = &with_default_device_rules(resources);
        let opts = ControllerOpt {
            resources,
            disable_oom_killer: resources.memory().as_ref().and_then(|m| m.disable_oom_killer()).unwrap_or(false),
            oom_score_adj: None,
            freezer_state: None,
        };
        self.manager.apply(&opts).map_err(|e| self.error(e))?;
        self.forbid_swap_when_asked(resources)
    }

    /// OCI `memory.swap` is memory+swap; equal to the limit it means "no swap". On cgroup v2
    /// that is `memory.swap.max = 0`, which libcgroups 0.7 never writes (it skips zero), so a
    /// container could swap on a v2 host with swap. Write it ourselves.
    fn forbid_swap_when_asked(&self, resources: &LinuxResources) -> Result<()> {
        let Some(memory) = resources.memory().as_ref() else { return Ok(()) };
        if memory.limit().is_none() || memory.swap() != memory.limit() {
            return Ok(());
        }
        let root = Path::new("/sys/fs/cgroup");
        if !root.join("cgroup.controllers").exists() {
            return Ok(()); // v1 or hybrid: libcgroups wrote memsw.limit_in_bytes
        }
        let file = root.join(self.path.strip_prefix("/").unwrap_or(&self.path)).join("memory.swap.max");
        if !file.exists() {
            return Ok(()); // the kernel has no swap accounting
        }
        std::fs::write(&file, "0").map_err(|e| self.error(format!("write {}: {e}", file.display())))
    }

    /// Freezes or thaws every process in the cgroup.
    pub fn freeze(&self, state: FreezerState) -> Result<()> {
        self.manager.freeze(state).map_err(|e| self.error(e))
    }

    /// Kills whatever still runs in the cgroup and removes it.
    pub fn remove(&self) -> Result<()> {
        self.manager.remove().map_err(|e| self.error(e))
    }

    fn error(&self, e: impl std::fmt::Display) -> Error {
        Error::Cgroup { path: self.path.clone(), reason: e.to_string() }
    }
}

/// The spec's resources with runc's "deny every device" in front of its device rules
/// (libcgroups appends the default devices after them).
fn with_default_device_rules(resources: Option<&LinuxResources>) -> LinuxResources {
    let mut resources = resources.cloned().unwrap_or_default();
    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all.set_allow(false).set_typ(Some(LinuxDeviceType::A)).set_access(Some("rwm".into()));
    let mut rules = vec![deny_all];
    rules.extend(resources.devices().iter().flatten().cloned());
    resources.set_devices(Some(rules));
    resources
}

/// One cgroup hierarchy mounted on the host.
pub struct Hierarchy {
    /// Where the host mounts it, e.g. /sys/fs/cgroup/memory.
    pub mount_point: PathBuf,
    /// "cgroup" (v1) or "cgroup2".
    pub fstype: String,
    /// The v1 super options that name the controllers, e.g. "memory" or "name=systemd".
    pub controllers: String,
}

impl Hierarchy {
    /// Whether a `/proc/PID/cgroup` line's controller list names this hierarchy.
    pub fn matches(&self, controllers: &str) -> bool {
        if self.fstype == "cgroup2" {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| !c.is_empty() && self.controllers.split(',').any(|h| h == c))
        }
    }
}

/// The (controllers, path) pairs of `/proc/<pid>/cgroup` (`self` for our own).
pub fn membership(pid: &str) -> Result<Vec<(String, String)>> {
    let path = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&path).context(|| format!("read {path}"))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((ctrls.to_string(), path.to_string()))
        })
        .collect())
}

/// The directories of cgroup `path` in every hierarchy where process `pid` sits in it: what
/// creating the container made, and what deleting it removes.
pub fn dirs_of(pid: i32, path: &Path) -> Result<Vec<PathBuf>> {
    let wanted = Path::new("/").join(path);
    let hierarchies = host_hierarchies()?;
    let mut dirs = Vec::new();
    for (ctrls, member) in membership(&pid.to_string())? {
        if Path::new(&member) != wanted {
            continue;
        }
        for h in hierarchies.iter().filter(|h| h.matches(&ctrls)) {
            let dir = h.mount_point.join(member.trim_start_matches('/'));
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    Ok(dirs)
}

/// How long one freeze may take to settle before the kill goes ahead without it.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(1);

/// Kills every process of the cgroup in `dirs` (the container's directory in each hierarchy)
/// and of every cgroup below it, and waits until none is left: what runc's
/// `signalAllProcesses` does, so that a container without its own pid namespace, or a process
/// moved into its cgroup, cannot outlive the container.
///
/// Where the kernel has cgroup v2's `cgroup.kill` (Linux 5.14), one write kills the whole
/// subtree. Otherwise, and for whatever that missed, each round freezes the cgroup (a frozen
/// process cannot fork a child we would not see), sends SIGKILL to every pid in `cgroup.procs`,
/// and thaws it and every cgroup below it (on v1 a frozen process cannot act on SIGKILL). Zombies count as gone: they no longer
/// run and do not keep a cgroup from being removed. Fails naming the pids left after `timeout`.
pub fn kill_all(dirs: &[PathBuf], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for dir in dirs {
        let file = dir.join("cgroup.kill");
        if file.exists()
            && let Err(e) = std::fs::write(&file, "1")
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %file.display(), error = %e, "cgroup.kill failed; killing pid by pid");
        }
    }
    let mut pause = Duration::from_micros(200);
    loop {
        let left = live_pids(dirs);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let path = dirs.first().cloned().unwrap_or_default();
            return Err(Error::Cgroup { path, reason: format!("processes {left:?} are still alive {timeout:?} after SIGKILL") });
        }
        set_frozen(dirs, true);
        for pid in live_pids(dirs) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Every cgroup of the tree: one below that was frozen on its own stays frozen when its
        // parent thaws, and on v1 its processes would never act on the SIGKILL.
        let tree: Vec<PathBuf> = dirs.iter().flat_map(|d| cgroup_tree(d)).collect();
        set_frozen(&tree, false);
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The live (not zombie) processes in the cgroups `dirs` and below them, sorted.
pub fn live_pids(dirs: &[PathBuf]) -> Vec<i32> {
    let mut pids = Vec::new();
    for dir in dirs {
        for cgroup in cgroup_tree(dir) {
            let Ok(procs) = std::fs::read_to_string(cgroup.join("cgroup.procs")) else { continue };
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids.retain(|&pid| crate::state::process_start_time(pid).is_some_and(|(_, zombie)| !zombie));
    pids
}

/// `dir` and every cgroup below it, parents before children; empty when `dir` does not exist.
fn cgroup_tree(dir: &Path) -> Vec<PathBuf> {
    let mut tree = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        todo.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        tree.push(dir);
    }
    tree
}

/// Freezes (or thaws) the cgroup in every hierarchy that can: the v1 freezer's `freezer.state`,
/// cgroup v2's `cgroup.freeze`. Best effort: a cgroup that does not settle within
/// [`FREEZE_TIMEOUT`] is killed unfrozen, and the caller's next round catches any fork.
fn set_frozen(dirs: &[PathBuf], frozen: bool) {
    for dir in dirs {
        let v1 = dir.join("freezer.state");
        if v1.exists() {
            let want = if frozen { "FROZEN" } else { "THAWED" };
            // v1 reports FREEZING until every task stopped; writing FROZEN again retries it.
            settle(|| std::fs::write(&v1, want).is_ok() && std::fs::read_to_string(&v1).is_ok_and(|s| s.trim() == want));
        }
        let v2 = dir.join("cgroup.freeze");
        if v2.exists() && std::fs::write(&v2, if frozen { "1" } else { "0" }).is_ok() {
            let want = if frozen { "frozen 1" } else { "frozen 0" };
            settle(|| std::fs::read_to_string(dir.join("cgroup.events")).is_ok_and(|s| s.lines().any(|l| l == want)));
        }
    }
}

/// Polls `done` until it holds or [`FREEZE_TIMEOUT`] passed.
fn settle(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    let mut pause = Duration::from_micros(100);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Removes the cgroup in each directory, the cgroups below it first, retrying while the kernel
/// still counts dying processes in it. A directory that is already gone is fine. The processes
/// must be gone: see [`kill_all`].
pub fn remove_dirs(dirs: &[PathBuf], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for dir in dirs {
        for cgroup in cgroup_tree(dir).iter().rev() {
            let mut pause = Duration::from_micros(500);
            loop {
                match std::fs::remove_dir(cgroup) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        let left = live_pids(std::slice::from_ref(cgroup));
                        return Err(Error::Cgroup {
                            path: cgroup.clone(),
                            reason: format!("cannot remove it ({e}); processes in it: {left:?}"),
                        });
                    }
                    Err(_) => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(50));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether the cgroup in `dirs` is frozen (v1 `freezer.state` or v2 `cgroup.freeze`).
pub fn is_frozen(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|dir| {
        let v1 = std::fs::read_to_string(dir.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN");
        let v2 = std::fs::read_to_string(dir.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1");
        v1 || v2
    })
}

/// The cgroup hierarchies mounted under /sys/fs/cgroup on the host, from /proc/self/mountinfo.
pub fn host_hierarchies() -> Result<Vec<Hierarchy>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context(|| "read /proc/self/mountinfo".into())?;
    Ok(parse_mountinfo(&text))
}

fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(mount_point) = left.split(' ').nth(4) else { continue };
        let mut right = right.split(' ');
        let (Some(fstype), _, Some(super_opts)) = (right.next(), right.next(), right.next()) else {
            continue;
        };
        if !(fstype == "cgroup" || fstype == "cgroup2") || !mount_point.starts_with("/sys/fs/cgroup") {
            continue;
        }
        let controllers = super_opts
            .split(',')
            .filter(|o| {
                !matches!(*o, "rw" | "ro" | "nsdelegate" | "memory_recursiveprot" | "xattr" | "clone_children")
                    && !o.starts_with("release_agent=")
            })
            .collect::<Vec<_>>()
            .join(",");
        out.push(Hierarchy { mount_point: PathBuf::from(mount_point), fstype: fstype.into(), controllers });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_starts_from_deny_all_devices() {
        let rule = |allow: bool, typ: LinuxDeviceType, access: &str| {
            let mut r = LinuxDeviceCgroup::default();
            r.set_allow(allow).set_typ(Some(typ)).set_access(Some(access.into()));
            r
        };
        let deny_all = rule(false, LinuxDeviceType::A, "rwm");
        let allow_block = rule(true, LinuxDeviceType::B, "r");
        let with_rules = |rules: Option<Vec<LinuxDeviceCgroup>>| {
            let mut r = LinuxResources::default();
            r.set_devices(rules);
            r
        };
        let cases = [
            (None, vec![deny_all.clone()]),
            (Some(with_rules(None)), vec![deny_all.clone()]),
            (Some(with_rules(Some(vec![]))), vec![deny_all.clone()]),
            (Some(with_rules(Some(vec![allow_block.clone()]))), vec![deny_all.clone(), allow_block.clone()]),
            (Some(with_rules(Some(vec![deny_all.clone(), allow_block.clone()]))), vec![deny_all.clone(), deny_all.clone(), allow_block]),
        ];
        for (spec, want) in cases {
            let got = with_default_device_rules(spec.as_ref());
            assert_eq!(got.devices().as_deref(), Some(&want[..]), "{spec:?}");
        }
    }

    #[test]
    fn live_pids_walks_the_cgroups_below_and_skips_the_dead() {
        let root = std::env::temp_dir().join(format!("sched-live-pids-{}", std::process::id()));
        let nested = root.join("a/b");
        std::fs::create_dir_all(&nested).unwrap();
        let me = std::process::id() as i32;
        // A pid the kernel never hands out (above pid_max's ceiling of 2^22).
        let dead = 1 << 23;
        std::fs::write(root.join("cgroup.procs"), format!("{dead}\n")).unwrap();
        std::fs::write(nested.join("cgroup.procs"), format!("{me}\n{me}\n")).unwrap();
        let found = live_pids(std::slice::from_ref(&root));
        let tree = cgroup_tree(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found, vec![me]);
        assert_eq!(tree, vec![root.clone(), root.join("a"), nested]);
        assert!(live_pids(&[root]).is_empty(), "a cgroup that is gone holds nothing");
    }

    #[test]
    fn hybrid_mountinfo_lists_every_hierarchy() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:6 - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid shared:9 - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct
40 25 0:40 / /proc rw - proc proc rw";
        let h = parse_mountinfo(text);
        let names: Vec<_> = h.iter().map(|h| (h.mount_point.display().to_string(), h.controllers.clone())).collect();
        assert_eq!(
            names,
            vec![
                ("/sys/fs/cgroup/unified".into(), "".into()),
                ("/sys/fs/cgroup/systemd".into(), "name=systemd".into()),
                ("/sys/fs/cgroup/memory".into(), "memory".into()),
                ("/sys/fs/cgroup/cpu,cpuacct".into(), "cpu,cpuacct".into()),
            ]
        );
    }
}
