//! The Vagrant lab (`vagrant/`) run by a test without letting any of its traffic off the machine.
//!
//! [`VagrantLab::start`] makes a network namespace and, inside it, a private mount namespace in
//! which `virtlogd` and `libvirtd` run with their own copies of /etc/libvirt, /var/lib/libvirt,
//! /var/cache/libvirt and /var/log/libvirt (bind-mounted from the run's work dir) and a fresh
//! tmpfs on /run. So libvirt's bridges, dnsmasq, NAT rules and the VMs' qemu processes live in
//! the namespace (no route leaves it), and every file libvirt writes — domain definitions,
//! networks, the storage pool, logs — is under the work dir. Vagrant, `vagrant/lab` and the
//! registry it starts run in the same namespaces ([`VagrantLab::lab`]); `sched`, ssh and curl
//! from the test run in the network namespace ([`VagrantLab::sched_json`], [`VagrantLab::ssh`]).
//!
//! The box is the one `vagrant/build-box.sh` builds with debootstrap, cached in [`BOX_FILE`]
//! between runs ([`ensure_box`]); no box is downloaded. Vagrant's home (the box added) and the
//! storage pool (the box's disk uploaded) are kept beside it, in /var/cache/sched-vagrant.
//!
//! [`VagrantLab::teardown`] (also run on drop, so on failure too) destroys what domains are
//! left, SIGKILLs every process of the namespace (libvirtd, virtlogd, qemu, dnsmasq, the
//! registry), which takes the mount namespace and its mounts with it, removes the network
//! namespace and the work dir, and reports whatever it could not remove.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bundle::{mounts_under, process_alive, unique_name};
use crate::cluster::sched_binary;

/// Where the locally built box is cached between runs.
pub const BOX_FILE: &str = "/var/cache/sched-vagrant/sched-bookworm-v1.box";
/// The storage pool's dir, kept between runs with [`VAGRANT_HOME`]: vagrant-libvirt uploads
/// the box's disk into the pool once (a minute or more under load) and finds it there by name
/// afterwards (the name carries the time the box was added). The VMs' own volumes go with them.
pub const POOL_DIR: &str = "/var/cache/sched-vagrant/pool";
/// Vagrant's home, kept between runs: the box added once.
pub const VAGRANT_HOME: &str = "/var/cache/sched-vagrant/vagrant-home";
/// The name the box is added under (a new box file, a new name).
pub const BOX_NAME: &str = "sched-test/bookworm-v1";
/// The lab's nodes and their addresses on the private network (vagrant/Vagrantfile).
pub const NODES: [(&str, &str); 3] = [("node1", "192.168.56.11"), ("node2", "192.168.56.12"), ("node3", "192.168.56.13")];
/// libvirt's dirs on the machine, which the run's libvirtd sees replaced by its own copies.
const LIBVIRT_DIRS: [&str; 5] = ["/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt", "/run/libvirt"];
/// The servers, as `sched --server` takes them.
pub const SERVERS: &str = "192.168.56.11:7701,192.168.56.12:7701,192.168.56.13:7701";

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository").to_path_buf()
}

/// The release build's dir beside the tests' (`target/release`), with the binaries the VMs run:
/// debug builds are too slow for emulated guests (their servers miss Raft heartbeats).
pub fn lab_binaries() -> PathBuf {
    let profile = sched_binary().parent().expect("target/<profile>").to_path_buf();
    let release = profile.parent().expect("target").join("release");
    for binary in ["sched", "sched-agent", "sched-runtime"] {
        assert!(
            release.join(binary).exists(),
            "{} is missing: cargo build --release -p sched -p agent -p runtime --bins (scripts/test.sh does)",
            release.join(binary).display()
        );
    }
    release
}

/// Builds the box with `vagrant/build-box.sh` when [`BOX_FILE`] is missing; how long it took.
pub fn ensure_box() -> Option<Duration> {
    if Path::new(BOX_FILE).exists() {
        return None;
    }
    let started = Instant::now();
    let status = Command::new("bash")
        .arg(repo().join("vagrant/build-box.sh"))
        .arg(BOX_FILE)
        .status()
        .expect("run vagrant/build-box.sh (needs debootstrap, qemu-utils, vagrant: scripts/install-test-deps.sh)");
    assert!(status.success(), "vagrant/build-box.sh failed ({status})");
    Some(started.elapsed())
}

/// libvirtd and vagrant in namespaces of their own; see the module docs.
pub struct VagrantLab {
    /// Everything libvirt, vagrant and the lab write (mode 0755: qemu runs as libvirt-qemu).
    work: PathBuf,
    /// `/run/sched-test-…`: the network namespace's pin.
    root: PathBuf,
    netns: PathBuf,
    libvirtd: Option<Child>,
    torn_down: bool,
}

impl VagrantLab {
    /// Makes the namespaces, starts virtlogd and libvirtd in them, defines the storage pool and
    /// adds the cached box to the run's own `VAGRANT_HOME`.
    pub fn start() -> VagrantLab {
        for tool in ["vagrant", "virsh", "libvirtd", "virtlogd", "unshare", "nsenter", "objcopy", "jq", "curl", "docker-registry"] {
            let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
            assert!(found, "{tool} is missing: run scripts/install-test-deps.sh");
        }
        let name = unique_name();
        let work = std::env::temp_dir().join(format!("{name}-vagrant"));
        let root = Path::new("/run").join(&name);
        let mut lab = VagrantLab { netns: root.join("net"), work, root, libvirtd: None, torn_down: false };
        fs::create_dir_all(&lab.work).expect("create the work dir");
        fs::set_permissions(&lab.work, fs::Permissions::from_mode(0o755)).expect("chmod the work dir");
        fs::create_dir_all(&lab.root).expect("create the namespace dir under /run");
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime");
        runtime.block_on(agent::network::netns::create(&lab.netns)).expect("create the lab's network namespace");
        ok(&lab.in_netns(&["ip", "link", "set", "lo", "up"]));
        lab.start_libvirt();
        fs::create_dir_all(POOL_DIR).expect("the storage pool's dir");
        ok(&lab.virsh(&["pool-define-as", "default", "dir", "--target", POOL_DIR]));
        ok(&lab.virsh(&["pool-start", "default"]));
        let boxes = lab.in_lab_namespaces(&["vagrant", "box", "list"]);
        if !text(&boxes.stdout).lines().any(|l| l.split_whitespace().next() == Some(BOX_NAME)) {
            ok(&lab.in_lab_namespaces(&["vagrant", "box", "add", "--name", BOX_NAME, BOX_FILE]));
        }
        lab
    }

    /// The run's own copies of libvirt's dirs, then `unshare --mount` with them bound over the
    /// host's, virtlogd, and libvirtd (the child: its namespaces are the lab's).
    fn start_libvirt(&mut self) {
        let w = &self.work;
        let copy = |from: &str, to: &str| {
            let status = Command::new("cp").args(["-a", from]).arg(w.join(to)).status().expect("run cp");
            assert!(status.success(), "cp -a {from}");
        };
        copy("/etc/libvirt", "etc-libvirt");
        copy("/var/lib/libvirt", "var-lib-libvirt");
        // No default network (its 192.168.122.0/24 is not the lab's), no autostarted anything.
        for dir in ["etc-libvirt/qemu/networks", "etc-libvirt/qemu/networks/autostart", "etc-libvirt/qemu/autostart"] {
            for entry in fs::read_dir(w.join(dir)).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| !t.is_dir()) {
                    fs::remove_file(entry.path()).expect("remove a default libvirt definition");
                }
            }
        }
        // qemu without cgroups of libvirt's (none to leave on the host) and without a security
        // driver's profiles.
        let qemu_conf = w.join("etc-libvirt/qemu.conf");
        let mut text = fs::read_to_string(&qemu_conf).unwrap_or_default();
        text.push_str("\n# sched's vagrant_lab test\ncgroup_controllers = [ ]\nsecurity_driver = \"none\"\n");
        fs::write(&qemu_conf, text).expect("write qemu.conf");
        for dir in ["var-cache-libvirt/qemu", "var-log-libvirt/qemu"] {
            fs::create_dir_all(w.join(dir)).expect("a libvirt dir");
        }
        let script = format!(
            "set -e\n\
             mount --bind {w}/etc-libvirt /etc/libvirt\n\
             mount --bind {w}/var-lib-libvirt /var/lib/libvirt\n\
             mount --bind {w}/var-cache-libvirt /var/cache/libvirt\n\
             mount --bind {w}/var-log-libvirt /var/log/libvirt\n\
             mount -t tmpfs -o mode=0755 lab-run /run\n\
             mkdir -p /run/libvirt /run/lock\n\
             virtlogd --daemon\n\
             exec libvirtd\n",
            w = w.display()
        );
        let log = fs::File::create(w.join("libvirtd.log")).expect("libvirtd log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .args(["unshare", "--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("start libvirtd");
        self.libvirtd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.virsh(&["list", "--all"]).status.success() {
                return;
            }
            if let Some(status) = self.libvirtd.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("libvirtd exited ({status}): {}", fs::read_to_string(w.join("libvirtd.log")).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "libvirtd did not answer within 60 s: {}", self.libvirtd_log());
            sleep(Duration::from_millis(200));
        }
    }

    fn libvirtd_pid(&self) -> u32 {
        self.libvirtd.as_ref().expect("libvirtd runs").id()
    }

    /// What libvirtd logged.
    pub fn libvirtd_log(&self) -> String {
        fs::read_to_string(self.work.join("libvirtd.log")).unwrap_or_default()
    }

    /// The lab's state dir (`SCHED_LAB_STATE`).
    pub fn state(&self) -> PathBuf {
        self.work.join("state")
    }

    /// `ARGS` in the lab's network namespace, output captured.
    pub fn in_netns(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .args(args)
            .env_remove("SCHED_SERVER")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {args:?} in the lab's namespace: {e}"))
    }

    /// A command in libvirtd's namespaces (network and mount), with the lab's environment.
    fn lab_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns.display()))
            .arg(format!("--mount=/proc/{}/ns/mnt", self.libvirtd_pid()))
            .args(args)
            .env_remove("SCHED_SERVER")
            .env_remove("SCHED_CONFIG")
            .env("VAGRANT_HOME", VAGRANT_HOME)
            .env("VAGRANT_DOTFILE_PATH", self.work.join("vagrant-dot"))
            .env("VAGRANT_DEFAULT_PROVIDER", "libvirt")
            .env("VAGRANT_CHECKPOINT_DISABLE", "1")
            .env("VAGRANT_BOX_UPDATE_CHECK_DISABLE", "1")
            .env("TMPDIR", self.work.join("tmp"))
            .env("SCHED_LAB_STATE", self.state())
            .env("SCHED_LAB_BOX", BOX_NAME)
            .env("SCHED_BIN_DIR", lab_binaries())
            .env("WAIT_SECS", "420")
            .stdin(Stdio::null());
        let _ = fs::create_dir_all(self.work.join("tmp"));
        command
    }

    fn in_lab_namespaces(&self, args: &[&str]) -> Output {
        self.lab_command(args).output().unwrap_or_else(|e| panic!("run {args:?} in the lab's namespaces: {e}"))
    }

    /// `vagrant/lab ARGS` in the lab's namespaces, its output passed through; true on success.
    pub fn lab(&self, args: &[&str]) -> bool {
        let script = repo().join("vagrant/lab");
        let mut all = vec!["bash", script.to_str().expect("a UTF-8 path")];
        all.extend_from_slice(args);
        let status = self.lab_command(&all).status().expect("run vagrant/lab");
        status.success()
    }

    /// `virsh -c qemu:///system ARGS` against the lab's libvirtd.
    pub fn virsh(&self, args: &[&str]) -> Output {
        let mut all = vec!["virsh", "-q", "-c", "qemu:///system"];
        all.extend_from_slice(args);
        self.in_lab_namespaces(&all)
    }

    /// Stops a VM as a power cut would (`virsh destroy`).
    pub fn force_off(&self, node: &str) {
        ok(&self.virsh(&["destroy", &format!("sched-lab-{node}")]));
    }

    /// `sched ARGS -o json` against the lab as its admin, or `None` when the call failed.
    pub fn sched_json(&self, args: &[&str]) -> Option<Value> {
        let sched = sched_binary();
        let config = self.state().join("admin.toml");
        let mut all = vec![sched.to_str().expect("UTF-8"), "--server", SERVERS, "--config", config.to_str().expect("UTF-8")];
        all.extend_from_slice(args);
        all.extend(["-o", "json"]);
        let out = self.in_netns(&all);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `COMMAND` run on `node` over ssh (the ssh-config `vagrant/lab up` wrote), output captured;
    /// given up after 60 s.
    pub fn ssh(&self, node: &str, command: &str) -> Output {
        let config = self.state().join("ssh-config");
        let config = config.to_str().expect("UTF-8");
        self.in_netns(&["timeout", "60", "ssh", "-F", config, "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", node, command])
    }

    /// `GET http://ADDRESS/` from the lab's network: the body, or why not.
    pub fn http_get(&self, address: &str) -> Result<String, String> {
        let out = self.in_netns(&["curl", "-fsS", "--max-time", "5", &format!("http://{address}/")]);
        if out.status.success() { Ok(text(&out.stdout)) } else { Err(text(&out.stderr)) }
    }

    /// The libvirt domains that exist (running or not).
    pub fn domains(&self) -> Vec<String> {
        let out = self.virsh(&["list", "--all", "--name"]);
        text(&out.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// The volumes of the storage pool.
    pub fn volumes(&self) -> Vec<String> {
        let out = self.virsh(&["vol-list", "default"]);
        text(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
    }

    /// The libvirt networks that exist.
    pub fn networks(&self) -> Vec<String> {
        let out = self.virsh(&["net-list", "--all", "--name"]);
        text(&out.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// The last lines of each VM's serial console, of its sched units' journal and of libvirtd's
    /// log, for failure messages.
    pub fn console_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        if self.state().join("ssh-config").exists() {
            for (node, _) in NODES {
                let journal = self.ssh(node, &format!("sudo journalctl -u sched-server -u sched-agent --no-pager | tail -n {lines}"));
                out.push_str(&format!(
                    "--- {node}: journalctl -u sched-server -u sched-agent ---\n{}{}\n",
                    text(&journal.stdout),
                    text(&journal.stderr)
                ));
            }
        }
        for (node, _) in NODES {
            let path = self.state().join(format!("{node}-console.log"));
            let log = fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            out.push_str(&format!("--- {} ---\n{}\n", path.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
        let log = self.libvirtd_log();
        let tail: Vec<&str> = log.lines().filter(|l| !l.contains("ethtool ioctl error")).rev().take(lines).collect();
        out.push_str(&format!("--- libvirtd ---\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        out
    }

    /// Pids whose network namespace is the lab's.
    fn processes(&self) -> Vec<i32> {
        let Ok(meta) = fs::metadata(&self.netns) else { return Vec::new() };
        let wanted = format!("net:[{}]", meta.ino());
        let me = std::process::id() as i32;
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse::<i32>().ok()?, e.path())))
            .filter(|(pid, path)| *pid != me && fs::read_link(path.join("ns/net")).is_ok_and(|l| l.to_string_lossy() == wanted))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Removes everything: domains left, every process of the namespaces, the namespace, the
    /// work dir. Returns what is still there afterwards (nothing, when it worked).
    pub fn teardown(&mut self) -> Vec<String> {
        self.torn_down = true;
        let mut left = Vec::new();
        if self.libvirtd.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none()) {
            for domain in self.domains() {
                let _ = self.virsh(&["destroy", &domain]);
                let _ = self.virsh(&["undefine", &domain, "--remove-all-storage"]);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let alive: Vec<i32> = self.processes().into_iter().filter(|&p| process_alive(p)).collect();
            if alive.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                left.extend(alive.iter().map(|p| format!("process {p} in the lab's network namespace")));
                break;
            }
            for pid in alive {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            sleep(Duration::from_millis(100));
        }
        if let Some(mut child) = self.libvirtd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for mount in mounts_under(&self.root).iter().rev() {
            if let Err(e) = nix::mount::umount2(Path::new(mount), nix::mount::MntFlags::MNT_DETACH) {
                left.push(format!("mount {mount}: {e}"));
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.root)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            left.push(format!("{}: {e}", self.root.display()));
        }
        if let Err(e) = fs::remove_dir_all(&self.work)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            left.push(format!("{}: {e}", self.work.display()));
        }
        // Mounts in the machine's own namespace on the run's dirs or on libvirt's.
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let watched = [&self.work, &self.root].map(|p| p.to_path_buf()).into_iter().chain(LIBVIRT_DIRS.iter().map(PathBuf::from));
        let watched: Vec<PathBuf> = watched.collect();
        for line in mounts.lines() {
            let mount_point = Path::new(line.split_whitespace().nth(4).unwrap_or_default());
            if watched.iter().any(|d| mount_point.starts_with(d)) {
                left.push(format!("mount {}", mount_point.display()));
            }
        }
        for path in [self.work.as_path(), self.root.as_path()] {
            if path.exists() {
                left.push(format!("{} still exists", path.display()));
            }
        }
        // A VM of the lab anywhere on the machine (qemu runs with `-name guest=sched-lab-NODE`).
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("guest=sched-lab-") {
                left.push(format!(
                    "process {}: {}",
                    entry.file_name().to_string_lossy(),
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                ));
            }
        }
        left
    }
}

impl Drop for VagrantLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.console_tails(40));
        }
        if !self.torn_down {
            let left = self.teardown();
            if !left.is_empty() {
                eprintln!("vagrant lab cleanup left: {left:#?}");
            }
        }
    }
}

#[track_caller]
fn ok(out: &Output) {
    assert!(out.status.success(), "failed ({}): {}{}", out.status, text(&out.stdout), text(&out.stderr));
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
