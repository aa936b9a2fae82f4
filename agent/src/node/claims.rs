//! What one agent manages alone on a host, claimed for as long as it runs.
//!
//! An agent reaps whatever under its data dir, cgroup parent, netns dir, bridge and nftables
//! table no task of its own owns ([`super::reaping`]). Two agents sharing one of them (a
//! `sched-agent` and a `sched dev` on one host both default to the cgroup parent `/sched`)
//! would each stop and remove the other's tasks. So at start an agent claims each of them by
//! an exclusive `flock` on a file under [`CLAIMS_DIR`] named after the resource, and a second
//! agent is refused, naming the resource, the holder's pid and the flag that moves it. The
//! kernel drops the locks when the holder exits, however it exits: a crashed agent leaves no
//! stale claim.
//!
//! Bridges and nftables tables are per network namespace, so their claims carry the
//! namespace's inode (agents in separate namespaces, as in the netns lab, may use one name).
//!
//! Host ids are one space for the whole kernel, whatever the namespaces: the pool of ids an
//! agent gives its tasks' user namespaces (`--userns-ids`) is claimed too, and not only by its
//! exact bounds: a pool that overlaps a live agent's pool is refused as well, or two tasks of
//! two agents could run as the same host ids.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{AgentError, Result};
use crate::task::IdPool;

/// Where the claim files live.
pub const CLAIMS_DIR: &str = "/run/sched/claims";

/// One resource an agent manages alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// What it is, as the refusal names it ("cgroup parent").
    pub what: &'static str,
    /// Which one ("/sched").
    pub value: String,
    /// How to give a second agent its own.
    pub hint: &'static str,
    /// What would go wrong with two agents on it.
    clash: &'static str,
    /// For an id pool, its first and last host id: overlapping pools clash too.
    ids: Option<(u64, u64)>,
    /// The file name under the claims dir.
    file: String,
}

/// What two agents sharing a data dir, cgroup parent or network would do.
const REAP_CLASH: &str = "two agents would reap each other's tasks";

/// The claim files of id pools start with this; the rest is `FIRST-LAST.lock`.
const ID_POOL_PREFIX: &str = "userns-ids-";

impl Claim {
    pub fn new(what: &'static str, key: &str, value: String, hint: &'static str) -> Claim {
        Claim { file: claim_file_name(key, &value), what, value, hint, clash: REAP_CLASH, ids: None }
    }

    /// The pool of host ids the agent's tasks' user namespaces get their ranges from.
    pub fn id_pool(pool: &IdPool) -> Claim {
        let first = u64::from(pool.first);
        let last = first + u64::from(pool.ranges) * u64::from(crate::task::id_ranges::RANGE_SIZE) - 1;
        Claim {
            what: "userns id pool",
            value: format!("host ids {first}-{last}"),
            hint: "--userns-ids",
            clash: "two agents would give their tasks the same host ids",
            ids: Some((first, last)),
            file: format!("{ID_POOL_PREFIX}{first}-{last}.lock"),
        }
    }

    fn refusal(&self, holder: &str) -> AgentError {
        AgentError::Claimed(format!(
            "the {} {} is managed by another sched agent on this host ({holder}); {}: stop it, or give this one its own ({})",
            self.what, self.value, self.clash, self.hint
        ))
    }
}

/// The claims an agent with these settings makes. `netns` names the network namespace the
/// agent runs in (its inode); `network` is `(bridge, nft table, netns dir)` when tasks get a
/// network.
pub fn claims_of(data_dir: &Path, cgroup_parent: &str, id_pool: &IdPool, netns: u64, network: Option<(&str, &str, &Path)>) -> Vec<Claim> {
    let mut claims = vec![
        Claim::new("data dir", "data-dir", data_dir.display().to_string(), "--data-dir"),
        Claim::new("cgroup parent", "cgroup", normalize_cgroup(cgroup_parent), "--cgroup-parent"),
        Claim::id_pool(id_pool),
    ];
    if let Some((bridge, table, netns_dir)) = network {
        claims.push(Claim::new("netns dir", "netns-dir", netns_dir.display().to_string(), "--netns-dir, or --no-network"));
        claims.push(Claim::new("bridge", "bridge", format!("{bridge} (network namespace {netns})"), "--bridge, or --no-network"));
        claims.push(Claim::new("nftables table", "nft", format!("{table} (network namespace {netns})"), "--no-network"));
    }
    claims
}

/// `/sched/` and `sched` are the cgroup `/sched`.
fn normalize_cgroup(parent: &str) -> String {
    format!("/{}", parent.trim_matches('/'))
}

/// `KEY-VALUE` with every byte outside `[A-Za-z0-9._-]` percent-encoded (one value, one name),
/// cut to a length every file system takes, with a hash of the whole when cut.
fn claim_file_name(key: &str, value: &str) -> String {
    let mut name = format!("{key}-");
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            name.push(byte as char);
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    const MAX: usize = 200;
    if name.len() > MAX {
        // FNV-1a: stable across builds, unlike std's hasher.
        let hash = value.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        name.truncate(MAX);
        name.push_str(&format!("~{hash:016x}"));
    }
    name + ".lock"
}

/// The claims held; dropping it removes their files and releases them (the process ending
/// releases them too, leaving the files for the next agent to lock).
#[derive(Debug)]
pub struct Held {
    locks: Vec<(PathBuf, Flock<File>)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Removed while still locked: an agent that opened the file before it went finds, once
        // it has the lock, that the path no longer names its file, and opens it again.
        for (path, _) in &self.locks {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Takes every claim under `dir`, or none: the first one another process holds is refused.
pub fn claim(dir: &Path, claims: &[Claim]) -> Result<Held> {
    std::fs::create_dir_all(dir).map_err(|e| AgentError::io(format!("create {}", dir.display()), e))?;
    // Built as it goes: a refusal drops (and removes) what was claimed before it.
    let mut held = Held { locks: Vec::with_capacity(claims.len()) };
    for claim in claims {
        let path = dir.join(&claim.file);
        let mut lock = lock_file(&path, claim)?;
        let stamp = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())
        };
        stamp(&mut lock).map_err(|e| AgentError::io(format!("write {}", path.display()), e))?;
        held.locks.push((path, lock));
    }
    // Locked first, compared after: of two agents with overlapping pools starting at once, at
    // least the later one sees the other's lock.
    for claim in claims {
        if let Some(ids) = claim.ids {
            refuse_overlapping_pools(dir, claim, ids)?;
        }
    }
    Ok(held)
}

/// Refuses `claim` when a live agent (its claim file locked) holds a pool that overlaps `ids`.
fn refuse_overlapping_pools(dir: &Path, claim: &Claim, ids: (u64, u64)) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| AgentError::io(format!("list {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == claim.file {
            continue;
        }
        let Some(other) = parse_pool_file(&name) else { continue };
        if other.1 < ids.0 || ids.1 < other.0 {
            continue;
        }
        let Ok(file) = std::fs::File::open(entry.path()) else { continue };
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            // Free: a stopped agent's file, nobody's pool.
            Ok(_) => continue,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(claim.refusal(&format!("{}, whose pool is host ids {}-{}", holder_of(&mut file), other.0, other.1)));
            }
            Err(_) => continue,
        }
    }
    Ok(())
}

/// Who holds a claim file, from the pid its holder wrote in it.
fn holder_of(file: &mut File) -> String {
    let mut pid = String::new();
    let _ = file.read_to_string(&mut pid);
    match pid.trim() {
        "" => "another process".to_string(),
        pid => format!("pid {pid}"),
    }
}

/// `(first, last)` from an id pool's claim file name.
fn parse_pool_file(name: &str) -> Option<(u64, u64)> {
    let bounds = name.strip_prefix(ID_POOL_PREFIX)?.strip_suffix(".lock")?;
    let (first, last) = bounds.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// Locks the file at `path`, created if missing, and still the file at `path` once locked.
fn lock_file(path: &Path, claim: &Claim) -> Result<Flock<File>> {
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| AgentError::io(format!("open {}", path.display()), e))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => return Err(claim.refusal(&holder_of(&mut file))),
            Err((_, errno)) => return Err(AgentError::io(format!("lock {}", path.display()), errno.into())),
        };
        let same = match (lock.metadata(), std::fs::metadata(path)) {
            (Ok(locked), Ok(named)) => locked.ino() == named.ino() && locked.dev() == named.dev(),
            _ => false,
        };
        if same {
            return Ok(lock);
        }
    }
}

/// The inode of this process's network namespace (0 when it cannot be read).
pub fn network_namespace() -> u64 {
    std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0)
}

/// The data dir as the claim names it: created, then made absolute without symlinks, so two
/// spellings of one directory are one claim.
pub fn canonical_data_dir(data_dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(data_dir).map_err(|e| AgentError::io(format!("create {}", data_dir.display()), e))?;
    data_dir.canonicalize().map_err(|e| AgentError::io(format!("resolve {}", data_dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_one_per_value_and_safe() {
        let cases = [
            ("cgroup", "/sched", "cgroup-%2Fsched.lock"),
            ("cgroup", "/sched-dev", "cgroup-%2Fsched-dev.lock"),
            ("data-dir", "/var/lib/sched/dev/agent", "data-dir-%2Fvar%2Flib%2Fsched%2Fdev%2Fagent.lock"),
            ("bridge", "sched0 (network namespace 4026531840)", "bridge-sched0%20%28network%20namespace%204026531840%29.lock"),
            ("data-dir", "/a/../b", "data-dir-%2Fa%2F..%2Fb.lock"),
        ];
        for (key, value, want) in cases {
            assert_eq!(claim_file_name(key, value), want, "{key} {value}");
        }
        let long = "/x".repeat(300);
        let name = claim_file_name("data-dir", &long);
        assert!(name.len() < 255 && !name.contains('/'), "{name}");
        assert_ne!(name, claim_file_name("data-dir", &format!("{long}y")), "a cut name keeps a hash of the whole");
    }

    #[test]
    fn cgroup_parents_are_compared_without_their_slashes() {
        assert_eq!(normalize_cgroup("sched/"), "/sched");
        assert_eq!(normalize_cgroup("/sched"), "/sched");
        assert_eq!(normalize_cgroup("/a/b/"), "/a/b");
    }

    #[test]
    fn network_claims_only_with_a_network_and_per_namespace() {
        let plain = claims_of(Path::new("/d"), "/sched", &IdPool::default(), 7, None);
        assert_eq!(plain.iter().map(|c| c.what).collect::<Vec<_>>(), ["data dir", "cgroup parent", "userns id pool"]);
        let here = claims_of(Path::new("/d"), "/sched", &IdPool::default(), 7, Some(("sched0", "sched", Path::new("/run/sched/netns"))));
        let there = claims_of(Path::new("/e"), "/other", &pool(1), 8, Some(("sched0", "sched", Path::new("/run/lab/netns"))));
        assert_eq!(here.len(), 6);
        for (a, b) in here.iter().zip(&there) {
            assert_ne!(a.file, b.file, "{} differs between the two agents", a.what);
        }
    }

    /// A pool of 16 ranges starting at 2^30 + `slot` x 16 ranges.
    fn pool(slot: u32) -> IdPool {
        IdPool { first: (1 << 30) + slot * 16 * 65_536, ranges: 16 }
    }

    #[test]
    fn id_pools_are_claimed_by_their_bounds_and_overlapping_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let held = claim(dir.path(), &[Claim::id_pool(&pool(0))]).unwrap();
        assert!(dir.path().join("userns-ids-1073741824-1074790399.lock").exists());
        // The same pool, a pool that overlaps it from above, and one that holds it whole.
        let overlapping = [
            pool(0),
            IdPool { first: (1 << 30) + 8 * 65_536, ranges: 16 },
            IdPool { first: 1 << 16, ranges: 32_767 },
            IdPool { first: 1 << 29, ranges: 16_384 },
        ];
        for other in overlapping {
            let err = claim(dir.path(), &[Claim::id_pool(&other)]).unwrap_err().to_string();
            assert!(err.contains("userns id pool host ids") && err.contains("the same host ids") && err.contains("--userns-ids"), "{err}");
            assert!(err.contains(&format!("(pid {}", std::process::id())), "names the holder: {err}");
        }
        // The overlap check names the other pool; a refused claim leaves no file of its own.
        let err = claim(dir.path(), &[Claim::id_pool(&overlapping[1])]).unwrap_err().to_string();
        assert!(err.contains("whose pool is host ids 1073741824-1074790399"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the holder's file");
        // Next to it, not on it: fine.
        let beside = claim(dir.path(), &[Claim::id_pool(&pool(1))]).expect("a disjoint pool");
        drop((held, beside));
        // A stopped agent's file (unlocked) does not refuse an overlapping pool.
        std::fs::write(dir.path().join("userns-ids-1073741824-1074790399.lock"), "1\n").unwrap();
        let over_stale = claim(dir.path(), &[Claim::id_pool(&overlapping[1])]).expect("a stale file is nobody's pool");
        drop(over_stale);
    }

    #[test]
    fn a_second_claim_is_refused_naming_the_resource_holder_and_flag_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let claims = claims_of(Path::new("/d"), "/sched", &IdPool::default(), 7, None);
        let held = claim(dir.path(), &claims).unwrap();
        // flock locks belong to the open file: a second open in this process conflicts too.
        let other = claims_of(Path::new("/other"), "/sched/", &pool(1), 7, None);
        let err = claim(dir.path(), &other).unwrap_err().to_string();
        let pid = std::process::id();
        assert!(err.contains("the cgroup parent /sched is managed by another sched agent"), "{err}");
        assert!(err.contains(&format!("(pid {pid})")) && err.contains("--cgroup-parent"), "{err}");
        drop(held);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a released claim leaves no file");
        let again = claim(dir.path(), &other).expect("free once the holder is gone");
        let stamped = std::fs::read_to_string(dir.path().join(&other[1].file)).unwrap();
        assert_eq!(stamped.trim(), pid.to_string(), "the holder's pid is in its file");
        drop(again);
    }
}
