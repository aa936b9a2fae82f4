//! What isolates a container: its own pid, uts, mount and network namespaces (new, or a network
//! namespace joined by path), the spec's mounts (including a read-only bind mount and a tmpfs),
//! masked and read-only paths, a read-only root, sysctls, and exactly the spec's capabilities.
//!
//! Run against another runtime with `SCHED_TEST_RUNTIME=/usr/sbin/runc cargo test -p sched-tests
//! --test runtime_isolation`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sched_tests::bundle::{BusyboxBundle, unique_name};

/// Runs the bundle in the foreground and returns its stdout, failing the test if it fails.
#[track_caller]
fn run_ok(bundle: &BusyboxBundle) -> String {
    let outcome = bundle.run();
    outcome.assert_success();
    outcome.stdout
}

#[test]
fn container_process_is_pid_1() {
    let bundle = BusyboxBundle::new().shell("echo $$; cat /proc/self/stat | cut -d' ' -f4");
    let out = run_ok(&bundle);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"), "the shell is pid 1: {out}");
    assert_eq!(lines.next(), Some("1"), "its child's parent is pid 1: {out}");
}

#[test]
fn container_has_its_own_hostname() {
    let host_before = fs::read_to_string("/proc/sys/kernel/hostname").expect("host hostname");
    let bundle = BusyboxBundle::new().hostname("isolated-box").shell("hostname");
    assert_eq!(run_ok(&bundle), "isolated-box\n");
    let host_after = fs::read_to_string("/proc/sys/kernel/hostname").expect("host hostname");
    assert_eq!(host_before, host_after, "the host's hostname is untouched");
}

#[test]
fn host_processes_are_invisible() {
    let host_count =
        fs::read_dir("/proc").expect("list /proc").flatten().filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok()).count();
    assert!(host_count > 10, "the host runs many processes");

    let bundle = BusyboxBundle::new().shell("ls /proc; echo done");
    let out = run_ok(&bundle);
    let pids = numeric_entries(&out);
    assert!(pids.contains(&1), "the container sees itself as pid 1: {pids:?}");
    assert!(pids.len() <= 3, "only the container's own processes are visible: {pids:?}");
    assert!(!pids.contains(&std::process::id()), "the test process (host pid {}) is invisible: {pids:?}", std::process::id());
}

fn numeric_entries(listing: &str) -> Vec<u32> {
    listing.split_whitespace().filter_map(|w| w.parse().ok()).collect()
}

/// One line of /proc/self/mountinfo, as seen inside the container.
#[derive(Debug)]
struct MountEntry {
    point: String,
    options: Vec<String>,
    fstype: String,
    super_options: Vec<String>,
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some(MountEntry {
                point: left.get(4)?.to_string(),
                options: left.get(5)?.split(',').map(str::to_owned).collect(),
                fstype: right.first()?.to_string(),
                super_options: right.get(2).unwrap_or(&"").split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// The topmost (last) mount at `point`.
#[track_caller]
fn mount_at<'a>(mounts: &'a [MountEntry], point: &str) -> &'a MountEntry {
    mounts.iter().rev().find(|m| m.point == point).unwrap_or_else(|| panic!("no mount at {point} in the container: {mounts:#?}"))
}

#[test]
fn mounts_are_as_specified() {
    let bundle = BusyboxBundle::new();
    let shared = bundle.dir().join("shared");
    fs::create_dir(&shared).expect("create the bind-mount source");
    fs::write(shared.join("hello"), "from the host\n").expect("write the shared file");
    let bundle = bundle
        .mount("/data", "bind", &shared.to_string_lossy(), &["rbind", "ro"])
        .mount("/scratch", "tmpfs", "tmpfs", &["nosuid", "size=1m", "mode=1777"])
        .shell(
            "cat /proc/self/mountinfo; echo ===; cat /data/hello; \
             echo x 2>/dev/null > /data/new && echo WROTE-DATA; \
             echo y > /scratch/file && echo WROTE-SCRATCH",
        );
    let out = run_ok(&bundle);
    let (mountinfo, rest) = out.split_once("===\n").expect("the script prints a separator");
    let mounts = parse_mountinfo(mountinfo);

    for (point, fstype) in [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
        ("/scratch", "tmpfs"),
    ] {
        assert_eq!(mount_at(&mounts, point).fstype, fstype, "{point}: {mounts:#?}");
    }
    let sys = mount_at(&mounts, "/sys");
    assert!(sys.options.contains(&"ro".into()), "/sys is read-only: {sys:?}");
    let cgroup = mount_at(&mounts, "/sys/fs/cgroup");
    assert!(["cgroup", "cgroup2", "tmpfs"].contains(&cgroup.fstype.as_str()), "/sys/fs/cgroup holds the cgroup filesystem: {cgroup:?}");
    let shm = mount_at(&mounts, "/dev/shm");
    assert!(shm.options.contains(&"noexec".into()), "/dev/shm options applied: {shm:?}");

    let data = mount_at(&mounts, "/data");
    assert!(data.options.contains(&"ro".into()), "the bind mount is read-only: {data:?}");
    let scratch = mount_at(&mounts, "/scratch");
    assert!(scratch.super_options.contains(&"size=1024k".into()), "tmpfs size: {scratch:?}");
    assert!(scratch.options.contains(&"nosuid".into()), "tmpfs flags: {scratch:?}");

    assert!(rest.contains("from the host"), "the bind mount shows the host dir: {rest}");
    assert!(!rest.contains("WROTE-DATA"), "writing to the ro bind mount must fail: {rest}");
    assert!(!shared.join("new").exists(), "nothing reached the host through the ro mount");
    assert!(rest.contains("WROTE-SCRATCH"), "the tmpfs is writable: {rest}");
    assert!(!bundle.rootfs().join("scratch/file").exists(), "the tmpfs write stays out of the rootfs");
}

#[test]
fn masked_paths_are_unreadable() {
    let bundle = BusyboxBundle::new();
    let masked: Vec<String> = bundle.config()["linux"]["maskedPaths"]
        .as_array()
        .expect("maskedPaths")
        .iter()
        .map(|p| p.as_str().expect("a path").to_owned())
        .collect();
    // Only paths that have content on this host prove anything.
    let with_content: Vec<&String> = masked.iter().filter(|p| has_content(Path::new(p.as_str()))).collect();
    assert!(!with_content.is_empty(), "no masked path has content on this host: {masked:?}");

    let script: String = with_content
        .iter()
        .map(|p| {
            format!(
                "if [ -d {p} ]; then echo \"{p} $(ls -A {p} | wc -l)\"; \
                 else echo \"{p} $(head -c 1 {p} 2>/dev/null | wc -c)\"; fi; "
            )
        })
        .collect();
    let bundle = bundle.shell(&script);
    let out = run_ok(&bundle);
    for path in with_content {
        let line =
            out.lines().find(|l| l.split(' ').next() == Some(path.as_str())).unwrap_or_else(|| panic!("no report for {path}: {out}"));
        assert!(line.ends_with(" 0"), "{path} must read empty inside the container: {line}");
    }
}

fn has_content(path: &Path) -> bool {
    if path.is_dir() {
        fs::read_dir(path).is_ok_and(|mut d| d.next().is_some())
    } else {
        fs::File::open(path).is_ok_and(|mut f| {
            let mut byte = [0u8; 1];
            std::io::Read::read(&mut f, &mut byte).is_ok_and(|n| n == 1)
        })
    }
}

#[test]
fn readonly_paths_are_read_only() {
    let bundle = BusyboxBundle::new().shell(
        "cat /proc/self/mountinfo; echo ===; \
         echo 1 2>/dev/null > /proc/sys/net/ipv4/ip_forward && echo WROTE-PROC-SYS; echo end",
    );
    let out = run_ok(&bundle);
    let (mountinfo, rest) = out.split_once("===\n").expect("separator");
    let mounts = parse_mountinfo(mountinfo);
    for point in ["/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sysrq-trigger"] {
        if let Some(m) = mounts.iter().rev().find(|m| m.point == point) {
            assert!(m.options.contains(&"ro".into()), "{point} is read-only: {m:?}");
        } else {
            assert!(!Path::new(point).exists(), "{point} exists on the host but is not remounted");
        }
    }
    assert!(!rest.contains("WROTE-PROC-SYS"), "/proc/sys must refuse writes: {rest}");
}

#[test]
fn readonly_root_refuses_writes() {
    let bundle = BusyboxBundle::new().readonly_root(true).shell(
        "touch /newfile 2>&1; echo touch-exit=$?; \
         echo y > /dev/shm/f && echo WROTE-SHM",
    );
    let out = run_ok(&bundle);
    assert!(out.contains("Read-only file system"), "the root refuses writes: {out}");
    assert!(!out.contains("touch-exit=0"), "{out}");
    assert!(out.contains("WROTE-SHM"), "mounts on top of a read-only root stay writable: {out}");
    assert!(!bundle.rootfs().join("newfile").exists());
}

#[test]
fn sysctls_apply_inside_the_container_only() {
    let host_ttl = fs::read_to_string("/proc/sys/net/ipv4/ip_default_ttl").expect("host ttl");
    let host_domain = fs::read_to_string("/proc/sys/kernel/domainname").expect("host domain");
    assert_ne!(host_ttl.trim(), "77", "pick a value the host does not have");
    let bundle = BusyboxBundle::new()
        .sysctl("net.ipv4.ip_default_ttl", "77")
        .sysctl("kernel.domainname", "sched.test")
        .shell("cat /proc/sys/net/ipv4/ip_default_ttl /proc/sys/kernel/domainname");
    assert_eq!(run_ok(&bundle), "77\nsched.test\n");
    assert_eq!(fs::read_to_string("/proc/sys/net/ipv4/ip_default_ttl").unwrap(), host_ttl);
    assert_eq!(fs::read_to_string("/proc/sys/kernel/domainname").unwrap(), host_domain);
}

/// A named network namespace (`ip netns add`) holding a veth pair; deleted on drop.
struct NamedNetns {
    name: String,
}

impl NamedNetns {
    fn new() -> Self {
        let name = unique_name();
        let netns = Self { name };
        ip(&["netns", "add", &netns.name]);
        ip(&["-n", &netns.name, "link", "add", "schedprobe0", "type", "veth", "peer", "name", "schedprobe1"]);
        netns
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

#[track_caller]
fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip (iproute2)");
    assert!(status.success(), "ip {args:?} failed");
}

#[test]
fn joins_an_existing_network_namespace_by_path() {
    let netns = NamedNetns::new();
    let inode = fs::metadata(netns.path()).expect("the netns file").ino();
    let bundle = BusyboxBundle::new().namespace_path("network", &netns.path()).shell("readlink /proc/self/ns/net; cat /proc/net/dev");
    let out = run_ok(&bundle);
    assert!(out.starts_with(&format!("net:[{inode}]")), "joined {inode}: {out}");
    assert!(out.contains("schedprobe0"), "the namespace's links are visible: {out}");
}

#[test]
fn new_network_namespace_has_only_loopback() {
    let bundle = BusyboxBundle::new().shell("cat /proc/net/dev");
    let out = run_ok(&bundle);
    let links: Vec<&str> = out.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(links, ["lo"], "{out}");
}

/// Linux capability numbers (include/uapi/linux/capability.h).
fn capability_number(name: &str) -> u32 {
    const NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    let short = name.strip_prefix("CAP_").unwrap_or(name);
    NAMES.iter().position(|n| *n == short).unwrap_or_else(|| panic!("unknown cap {name}")) as u32
}

fn capability_mask(names: &[&str]) -> u64 {
    names.iter().fold(0, |mask, name| mask | 1 << capability_number(name))
}

/// The `Cap*` lines of the container's pid 1, as masks.
fn capability_sets(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .filter_map(|l| {
            let (key, hex) = l.split_once(":\t")?;
            let mask = u64::from_str_radix(hex.trim(), 16).ok()?;
            key.starts_with("Cap").then(|| (key.to_owned(), mask))
        })
        .collect()
}

#[test]
fn default_capabilities_are_exactly_the_specs() {
    let bundle = BusyboxBundle::new().shell("cat /proc/1/status");
    let expected = capability_mask(&["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let sets = capability_sets(&run_ok(&bundle));
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let found = sets.iter().find(|(k, _)| k == set).expect(set).1;
        assert_eq!(found, expected, "{set}: {found:#x} != spec {expected:#x}");
    }
}

#[test]
fn custom_capabilities_fill_all_five_sets() {
    let caps = ["CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_TIME", "CAP_SETUID", "CAP_KILL"];
    let bundle = BusyboxBundle::new().capabilities(&caps).shell("cat /proc/1/status");
    let expected = capability_mask(&caps);
    let sets = capability_sets(&run_ok(&bundle));
    assert_eq!(sets.len(), 5, "five Cap lines: {sets:?}");
    for (set, found) in sets {
        assert_eq!(found, expected, "{set}: {found:#x} != spec {expected:#x}");
    }
}

#[test]
fn every_namespace_in_the_spec_is_new() {
    let kinds = ["pid", "mnt", "net", "ipc", "uts", "cgroup"];
    let script: String = kinds.iter().map(|k| format!("readlink /proc/1/ns/{k}; ")).collect();
    let bundle = BusyboxBundle::new().shell(&script);
    let out = run_ok(&bundle);
    let inside: Vec<&str> = out.lines().collect();
    assert_eq!(inside.len(), kinds.len(), "{out}");
    for (kind, link) in kinds.iter().zip(inside) {
        let host = fs::read_link(format!("/proc/self/ns/{kind}")).expect("host namespace link");
        assert_ne!(link, host.to_string_lossy(), "the {kind} namespace must be new");
    }
}

#[test]
fn root_is_the_bundle_rootfs_and_the_host_root_is_gone() {
    let bundle = BusyboxBundle::new();
    fs::write(bundle.rootfs().join("bundle-marker"), "inside\n").expect("write the marker");
    let bundle = bundle.shell("cat /bundle-marker; ls -a /; echo ===; cat /proc/self/mountinfo");
    let out = run_ok(&bundle);
    let (listing, mountinfo) = out.split_once("===\n").expect("separator");
    assert!(listing.starts_with("inside\n"), "/ is the bundle's rootfs: {out}");
    for host_dir in ["boot", "work", "home"] {
        if Path::new("/").join(host_dir).exists() {
            assert!(!listing.lines().any(|l| l == host_dir), "host /{host_dir} is visible: {out}");
        }
    }
    // After pivot_root the old root is detached: every mount is the new root or one the spec
    // (or the runtime's /dev setup) put under /proc, /dev or /sys.
    for mount in parse_mountinfo(mountinfo) {
        let point = mount.point.as_str();
        assert!(
            point == "/" || ["/proc", "/dev", "/sys"].iter().any(|p| point.starts_with(p)),
            "unexpected mount {point} (is the host's root still attached?): {mountinfo}"
        );
    }
}

#[test]
fn default_devices_and_dev_symlinks_exist() {
    let bundle = BusyboxBundle::new().shell(
        "for d in null zero full random urandom tty; do \
           echo \"$d $(stat -c '%F %t,%T' /dev/$d)\"; done; \
         for l in fd stdin stdout stderr ptmx; do echo \"$l -> $(readlink /dev/$l)\"; done; \
         echo ok > /dev/null && head -c 4 /dev/zero | wc -c",
    );
    let out = run_ok(&bundle);
    for (device, numbers) in [("null", "1,3"), ("zero", "1,5"), ("full", "1,7"), ("random", "1,8"), ("urandom", "1,9"), ("tty", "5,0")] {
        let want = format!("{device} character special file {numbers}");
        assert!(out.lines().any(|l| l == want), "{want}: {out}");
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let want = format!("{link} -> {target}");
        assert!(out.lines().any(|l| l == want), "{want}: {out}");
    }
    assert!(out.ends_with("4\n"), "the device cgroup allows the default devices: {out}");
}

#[test]
fn cgroup_namespace_shows_the_container_cgroup_as_root() {
    let bundle = BusyboxBundle::new().shell("cat /proc/self/cgroup");
    let out = run_ok(&bundle);
    assert!(!out.is_empty());
    for line in out.lines() {
        assert!(line.ends_with(":/"), "the container's own cgroup is its root: {line}");
    }
}
