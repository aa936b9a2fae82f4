//! Joining existing namespaces by path, for every type: net, uts, ipc, cgroup, pid and time of
//! a holder process; a mount namespace (the container sees a mount that exists only there); a user
//! namespace (the container gets its mappings). A path whose namespace is of another type, or
//! that is no namespace at all, is refused with a clear error and leaves nothing behind.
//!
//! Holders are `unshare(1)` processes (util-linux), killed when the test ends.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sched_tests::bundle::BusyboxBundle;

/// A process holding namespaces made by `unshare ARGS sleep 60`; killed on drop.
struct Holder {
    child: Child,
}

impl Holder {
    /// Starts the holder and waits until it has left our `watch` namespace.
    fn new(args: &[&str], watch: &str) -> Holder {
        let child = Command::new("unshare")
            .args(args)
            .args(["sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare(1) from util-linux (scripts/install-test-deps.sh)");
        let holder = Holder { child };
        let ours = ns_link(&format!("/proc/self/ns/{watch}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::read_link(holder.ns(watch)).ok().map(|l| l.to_string_lossy().into_owned()).unwrap_or_else(|| ours.clone()) == ours {
            assert!(Instant::now() < deadline, "unshare {args:?} did not make its namespaces");
            std::thread::sleep(Duration::from_millis(5));
        }
        holder
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ns(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{name}", self.pid()))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ns_link(path: &str) -> String {
    fs::read_link(path).map(|l| l.to_string_lossy().into_owned()).unwrap_or_default()
}

#[test]
fn joins_net_uts_ipc_cgroup_pid_and_time_by_path() {
    let holder = Holder::new(&["--net", "--uts", "--ipc", "--cgroup", "--pid", "--time", "--fork"], "net");
    let mut bundle = BusyboxBundle::new();
    let joined = [
        ("network", "net"),
        ("uts", "uts"),
        ("ipc", "ipc"),
        ("cgroup", "cgroup"),
        ("pid", "pid_for_children"),
        ("time", "time_for_children"),
    ];
    for (kind, name) in joined {
        bundle = bundle.namespace_path(kind, &holder.ns(name));
    }
    let bundle = bundle.shell("for n in net uts ipc cgroup pid time; do readlink /proc/self/ns/$n; done");
    let out = bundle.run();
    out.assert_success();
    let expected: Vec<String> = joined.iter().map(|(_, n)| ns_link(&holder.ns(n).to_string_lossy())).collect();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), expected, "{out:#?}");
}

#[test]
fn joins_a_mount_namespace_by_path() {
    let holder = Holder::new(&["--mount", "--propagation", "private"], "mnt");
    let bundle = BusyboxBundle::new().shell("cat /srv/marker; readlink /proc/self/ns/mnt");
    fs::create_dir_all(bundle.rootfs().join("srv")).unwrap();
    let srv = bundle.rootfs().join("srv");
    let script = format!("mount -t tmpfs tmpfs {0} && echo only-in-that-namespace > {0}/marker", srv.display());
    let status = Command::new("nsenter").arg("-t").arg(holder.pid().to_string()).args(["-m", "sh", "-c", &script]).status().unwrap();
    assert!(status.success(), "mount a tmpfs inside the holder's mount namespace");
    assert!(!srv.join("marker").exists(), "the host does not see the holder's mount");
    let bundle = bundle.namespace_path("mount", &holder.ns("mnt"));
    let out = bundle.run();
    out.assert_success();
    assert_eq!(out.stdout, format!("only-in-that-namespace\n{}\n", ns_link(&holder.ns("mnt").to_string_lossy())), "{out:#?}");
}

#[test]
fn joins_a_user_namespace_by_path() {
    let holder = Holder::new(&["--user"], "user");
    for map in ["uid_map", "gid_map"] {
        fs::write(format!("/proc/{}/{map}", holder.pid()), "0 400000 65536\n").unwrap();
    }
    let bundle = BusyboxBundle::new();
    let vol = bundle.dir().join("vol");
    fs::create_dir_all(&vol).unwrap();
    std::os::unix::fs::chown(&vol, Some(400_000), Some(400_000)).unwrap();
    let bundle = bundle
        .namespace_path("user", &holder.ns("user"))
        .mount("/vol", "bind", &vol.to_string_lossy(), &["rbind", "rw"])
        .shell("cat /proc/self/uid_map | tr -s ' '; readlink /proc/self/ns/user; touch /vol/made");
    let out = bundle.run();
    out.assert_success();
    assert_eq!(out.stdout, format!(" 0 400000 65536\n{}\n", ns_link(&holder.ns("user").to_string_lossy())), "{out:#?}");
    assert_eq!(fs::metadata(vol.join("made")).unwrap().uid(), 400_000);
}

#[test]
fn a_namespace_path_of_another_type_is_refused() {
    let mnt_of_ours = format!("/proc/{}/ns/mnt", std::process::id());
    let bundle = BusyboxBundle::new().namespace_path("network", std::path::Path::new(&mnt_of_ours));
    let line = bundle.create().assert_one_line_failure().to_owned();
    assert!(line.contains(&format!("net namespace path {mnt_of_ours} is a mnt namespace, not a net namespace")), "{line}");
    bundle.assert_nothing_left(None);

    let bundle = BusyboxBundle::new().namespace_path("uts", std::path::Path::new("/etc/hostname"));
    let line = bundle.create().assert_one_line_failure().to_owned();
    assert!(line.contains("uts namespace path /etc/hostname is not a namespace file"), "{line}");
    bundle.assert_nothing_left(None);
}
