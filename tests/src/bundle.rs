//! A busybox-static OCI bundle in a temp dir, and the runtime CLI that runs it.
//!
//! [`BusyboxBundle::new`] builds `rootfs/` (Debian's static `/bin/busybox` plus one symlink per
//! applet, a minimal `/etc/passwd` and `/etc/group`) and a `config.json` like `runc spec`'s
//! default (namespaces pid, mount, ipc, uts, network, cgroup; the usual `/proc`, `/dev`, `/sys`
//! and cgroup mounts; runc's masked and read-only paths and default capabilities; an absolute
//! `linux.cgroupsPath` of `/sched-test-<unique>`). Builder methods change the parts tests care
//! about; [`BusyboxBundle::config_mut`] reaches everything else.
//!
//! The runtime binary is chosen in one place, [`runtime_binary`]: `$SCHED_TEST_RUNTIME` if set
//! (e.g. `/usr/sbin/runc` to validate a test against the reference runtime), else the workspace's
//! `target/<profile>/sched-runtime`. Every CLI call passes `--root <temp dir>/state`, so tests
//! never share state with each other or with anything else on the host.
//!
//! Dropping the bundle kills and force-deletes the container, kills whatever is still in its
//! cgroup and removes that cgroup in every hierarchy (v1 controllers, the hybrid `unified`
//! cgroup2, or pure cgroup v2), lazily unmounts anything left under the temp dir, and removes the
//! temp dir: tests clean up also when they fail.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// How long one CLI call may take before the test fails (a hung runtime must not hang CI).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Where cgroup hierarchies are mounted on every Linux host we support.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The runtime under test: `$SCHED_TEST_RUNTIME`, else `sched-runtime` next to the test binary's
/// profile dir (`target/debug/deps/<test>` -> `target/debug/sched-runtime`).
pub fn runtime_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SCHED_TEST_RUNTIME") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's own path (current_exe)");
    let profile_dir = exe.parent().and_then(Path::parent).expect("the test binary lives in target/<profile>/deps/");
    let binary = profile_dir.join("sched-runtime");
    assert!(
        binary.exists(),
        "{} does not exist: build it with `cargo build -p runtime --bin sched-runtime`, or set \
         SCHED_TEST_RUNTIME to a runc-compatible runtime",
        binary.display()
    );
    binary
}

/// Debian's busybox-static; a dynamically linked busybox cannot run inside the bare rootfs.
fn host_busybox() -> PathBuf {
    let found = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox is missing: run `bash scripts/install-test-deps.sh` (busybox-static)");
    let elf = fs::read(&found).expect("read busybox");
    assert!(!has_interpreter(&elf), "{} is dynamically linked: install busybox-static (scripts/install-test-deps.sh)", found.display());
    found
}

/// True if a 64-bit little-endian ELF file has a PT_INTERP program header (needs ld.so).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| elf.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at = |at: usize| elf.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize);
    let (Some(phoff), Some(entsize), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..count).any(|i| {
        let at = phoff + i * entsize;
        elf.get(at..at + 4).is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == PT_INTERP)
    })
}

/// A name no other test, process or earlier run uses: `sched-test-<pid>-<n>-<micros>`.
pub fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() % 1_000_000_000).unwrap_or(0);
    format!("sched-test-{}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), micros)
}

/// What one runtime CLI call did.
#[derive(Debug)]
pub struct Outcome {
    /// The CLI's exit status.
    pub status: ExitStatus,
    /// Everything written to stdout (by the CLI and, for `run`, the container).
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl Outcome {
    /// The exit code, or `128 + N` when the CLI itself died of signal N (like a shell reports it).
    pub fn code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => unreachable!("a process exits or is killed"),
        }
    }

    /// Panics (showing both streams) unless the call exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "runtime call failed: {self:#?}");
        self
    }

    /// Panics unless the call failed the way the runtime CLI contract says every failure must:
    /// exit code 1 and exactly one non-empty line on stderr. Returns that line.
    #[track_caller]
    pub fn assert_one_line_failure(&self) -> &str {
        assert_eq!(self.code(), 1, "a failing call must exit 1: {self:#?}");
        let line = self.stderr.trim();
        assert!(!line.is_empty(), "a failing call must explain itself on stderr: {self:#?}");
        assert_eq!(line.lines().count(), 1, "the error must be one line: {self:#?}");
        line
    }
}

/// A `run` (or any CLI call) started in the background, e.g. to send it signals.
pub struct BackgroundCall {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl BackgroundCall {
    /// The CLI process's pid (signals sent here must reach the container).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the call to end; kills it and panics after `timeout`.
    #[track_caller]
    pub fn wait(mut self, timeout: Duration) -> Outcome {
        let status = wait_or_kill(&mut self.child, timeout);
        Outcome {
            status,
            stdout: fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }
}

impl Drop for BackgroundCall {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[track_caller]
fn wait_or_kill(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the runtime CLI") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the runtime CLI did not finish within {timeout:?}");
        }
        sleep(Duration::from_millis(5));
    }
}

/// A temp dir holding `bundle/` (config.json + rootfs), `state/` (the runtime's `--root`) and
/// `io/` (captured output), plus the container id and cgroup name derived from one unique name.
pub struct BusyboxBundle {
    dir: PathBuf,
    name: String,
    config: Value,
    runtime: PathBuf,
    calls: AtomicU32,
}

impl BusyboxBundle {
    /// Builds the rootfs and a runc-like default config that runs `true`.
    pub fn new() -> Self {
        let name = unique_name();
        let dir = std::env::temp_dir().join(&name);
        let bundle = Self { config: default_config(&name), dir, name, runtime: runtime_binary(), calls: AtomicU32::new(0) };
        for sub in ["bundle", "state", "io"] {
            fs::create_dir_all(bundle.dir.join(sub)).expect("create the test's temp dir");
        }
        build_rootfs(&bundle.rootfs()).expect("build the busybox rootfs");
        bundle
    }

    /// The temp dir that holds everything of this test (for host-side files to bind-mount).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bundle directory (`--bundle`).
    pub fn bundle_dir(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    /// The container's root filesystem on the host.
    pub fn rootfs(&self) -> PathBuf {
        self.bundle_dir().join("rootfs")
    }

    /// The runtime's state directory (`--root`).
    pub fn state_root(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The container id (also the cgroup's name).
    pub fn id(&self) -> &str {
        &self.name
    }

    /// `linux.cgroupsPath` without the leading `/`.
    pub fn cgroup_name(&self) -> &str {
        &self.name
    }

    /// The config that will be written to config.json.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The config that will be written to config.json, to change what no builder method covers.
    pub fn config_mut(&mut self) -> &mut Value {
        &mut self.config
    }

    /// Runs this bundle's CLI calls with `runtime` instead of [`runtime_binary`] (e.g. a private
    /// copy that a test may see damaged).
    pub fn with_runtime(mut self, runtime: &Path) -> Self {
        self.runtime = runtime.to_path_buf();
        self
    }

    /// `process.args`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    /// `process.args` = `sh -c SCRIPT`.
    pub fn shell(self, script: &str) -> Self {
        self.args(&["sh", "-c", script])
    }

    /// `hostname`.
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.config["hostname"] = json!(hostname);
        self
    }

    /// Merges `resources` into `linux.resources` (e.g. `{"memory": {"limit": N}}`).
    pub fn resources(mut self, resources: Value) -> Self {
        let target = &mut self.config["linux"]["resources"];
        for (key, value) in resources.as_object().expect("resources is a JSON object") {
            target[key] = value.clone();
        }
        self
    }

    /// All five capability sets set to `caps` (names like `CAP_KILL`).
    pub fn capabilities(mut self, caps: &[&str]) -> Self {
        self.config["process"]["capabilities"] = json!({
            "bounding": caps, "effective": caps, "inheritable": caps,
            "permitted": caps, "ambient": caps,
        });
        self
    }

    /// Appends a mount to `mounts`.
    pub fn mount(mut self, destination: &str, kind: &str, source: &str, options: &[&str]) -> Self {
        self.config["mounts"].as_array_mut().expect("mounts is an array").push(json!({
            "destination": destination, "type": kind, "source": source, "options": options,
        }));
        self
    }

    /// `root.readonly`.
    pub fn readonly_root(mut self, readonly: bool) -> Self {
        self.config["root"]["readonly"] = json!(readonly);
        self
    }

    /// Adds `KEY=VALUE` entries to `process.env`.
    pub fn env(mut self, vars: &[&str]) -> Self {
        let env = self.config["process"]["env"].as_array_mut().expect("env is an array");
        env.extend(vars.iter().map(|v| json!(v)));
        self
    }

    /// `process.cwd`.
    pub fn cwd(mut self, cwd: &str) -> Self {
        self.config["process"]["cwd"] = json!(cwd);
        self
    }

    /// `process.user`.
    pub fn user(mut self, uid: u32, gid: u32, additional_gids: &[u32]) -> Self {
        self.config["process"]["user"] = json!({ "uid": uid, "gid": gid, "additionalGids": additional_gids });
        self
    }

    /// Sets (or replaces) one `process.rlimits` entry, e.g. `RLIMIT_NOFILE`.
    pub fn rlimit(mut self, kind: &str, soft: u64, hard: u64) -> Self {
        let rlimits = self.config["process"]["rlimits"].as_array_mut().expect("rlimits array");
        rlimits.retain(|r| r["type"] != kind);
        rlimits.push(json!({ "type": kind, "soft": soft, "hard": hard }));
        self
    }

    /// `process.noNewPrivileges`.
    pub fn no_new_privileges(mut self, on: bool) -> Self {
        self.config["process"]["noNewPrivileges"] = json!(on);
        self
    }

    /// Adds one `linux.sysctl` entry.
    pub fn sysctl(mut self, key: &str, value: &str) -> Self {
        let linux = &mut self.config["linux"];
        if linux.get("sysctl").is_none() {
            linux["sysctl"] = json!({});
        }
        linux["sysctl"][key] = json!(value);
        self
    }

    /// Joins an existing namespace of `kind` (e.g. `network`) by path instead of creating one.
    pub fn namespace_path(mut self, kind: &str, path: &Path) -> Self {
        let namespaces = self.namespaces();
        namespaces.retain(|ns| ns["type"] != kind);
        namespaces.push(json!({ "type": kind, "path": path }));
        self
    }

    /// Removes the namespace of `kind` from the spec (the container shares the host's).
    pub fn without_namespace(mut self, kind: &str) -> Self {
        self.namespaces().retain(|ns| ns["type"] != kind);
        self
    }

    fn namespaces(&mut self) -> &mut Vec<Value> {
        self.config["linux"]["namespaces"].as_array_mut().expect("namespaces is an array")
    }

    /// Writes config.json (every verb that takes `--bundle` does this first).
    pub fn write_config(&self) {
        let text = serde_json::to_string_pretty(&self.config).expect("serialize config.json");
        fs::write(self.bundle_dir().join("config.json"), text).expect("write config.json");
    }

    /// Runs `<runtime> --root <state> ARGS...` to completion (stdin is /dev/null).
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> Outcome {
        self.spawn_cli(args).wait(CLI_TIMEOUT)
    }

    /// Starts `<runtime> --root <state> ARGS...` without waiting.
    pub fn spawn_cli(&self, args: &[&str]) -> BackgroundCall {
        // Files, not pipes: a detached container inherits the CLI's stdio and would hold a pipe
        // open long after the CLI exits.
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let verb = args.first().copied().unwrap_or("none");
        let stdout = self.dir.join("io").join(format!("{n}-{verb}.out"));
        let stderr = self.dir.join("io").join(format!("{n}-{verb}.err"));
        let child = Command::new(&self.runtime)
            .arg("--root")
            .arg(self.state_root())
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("create stdout capture file"))
            .stderr(fs::File::create(&stderr).expect("create stderr capture file"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.runtime.display()));
        BackgroundCall { child, stdout, stderr }
    }

    /// `run --bundle B ID` in the foreground: the container's output and exit code.
    #[track_caller]
    pub fn run(&self) -> Outcome {
        self.write_config();
        self.cli(&["run", "--bundle", &self.bundle_dir().to_string_lossy(), self.id()])
    }

    /// `run --bundle B ID` in the background (to signal it or inspect the running container).
    pub fn spawn_run(&self) -> BackgroundCall {
        self.write_config();
        self.spawn_cli(&["run", "--bundle", &self.bundle_dir().to_string_lossy(), self.id()])
    }

    /// `create --bundle B ID`.
    #[track_caller]
    pub fn create(&self) -> Outcome {
        self.write_config();
        self.cli(&["create", "--bundle", &self.bundle_dir().to_string_lossy(), self.id()])
    }

    /// `start ID`.
    #[track_caller]
    pub fn start(&self) -> Outcome {
        self.cli(&["start", self.id()])
    }

    /// `kill ID SIGNAL`.
    #[track_caller]
    pub fn kill(&self, signal: &str) -> Outcome {
        self.cli(&["kill", self.id(), signal])
    }

    /// `delete ID`.
    #[track_caller]
    pub fn delete(&self) -> Outcome {
        self.cli(&["delete", self.id()])
    }

    /// `state ID`, parsed; panics if the call fails or prints something that is not JSON.
    #[track_caller]
    pub fn state(&self) -> Value {
        let outcome = self.cli(&["state", self.id()]);
        outcome.assert_success();
        serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("state printed invalid JSON ({e}): {outcome:#?}"))
    }

    /// The container's status from `state`.
    #[track_caller]
    pub fn status(&self) -> String {
        self.state()["status"].as_str().expect("state has a string status").to_owned()
    }

    /// Polls `state` until the status is `wanted` (a container that does not exist yet, like
    /// right after spawning `run`, is waited for too); panics after `timeout`.
    #[track_caller]
    pub fn wait_for_status(&self, wanted: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let outcome = self.cli(&["state", self.id()]);
            let status = serde_json::from_str::<Value>(&outcome.stdout).ok().and_then(|state| state["status"].as_str().map(str::to_owned));
            if status.as_deref() == Some(wanted) {
                return;
            }
            assert!(Instant::now() < deadline, "container {} not {wanted:?} after {timeout:?}; last state call: {outcome:#?}", self.id());
            sleep(Duration::from_millis(10));
        }
    }

    /// Polls until `path` (relative to the rootfs) exists; panics after `timeout`.
    #[track_caller]
    pub fn wait_for_file(&self, path: &str, timeout: Duration) {
        let full = self.rootfs().join(path.trim_start_matches('/'));
        let deadline = Instant::now() + timeout;
        while !full.exists() {
            assert!(Instant::now() < deadline, "{} did not appear within {timeout:?}", full.display());
            sleep(Duration::from_millis(10));
        }
    }

    /// The container's cgroup dir for `controller` (v1 hierarchy, else the cgroup2 root).
    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        cgroup_dir_for(controller).join(self.cgroup_name())
    }

    /// Every existing dir of this container's cgroup, in every hierarchy.
    pub fn existing_cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_hierarchies().into_iter().map(|h| h.join(self.cgroup_name())).filter(|d| d.exists()).collect()
    }

    /// Asserts that the runtime left nothing of this container behind: no state entry, no cgroup
    /// dir in any hierarchy, no mount under the temp dir, no live process rooted in the bundle,
    /// and (if given) the container's former pid is gone.
    #[track_caller]
    pub fn assert_nothing_left(&self, former_pid: Option<i32>) {
        if let Ok(entries) = fs::read_dir(self.state_root()) {
            let names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
            assert!(
                !names.iter().any(|n| n.to_string_lossy().contains(self.id())),
                "state dir {} still holds {names:?}",
                self.state_root().display()
            );
        }
        let cgroups = self.existing_cgroup_dirs();
        assert!(cgroups.is_empty(), "cgroup dirs left behind: {cgroups:?}");
        let mounts = mounts_under(&self.dir);
        assert!(mounts.is_empty(), "mounts left behind in the host namespace: {mounts:?}");
        if let Some(pid) = former_pid {
            assert!(!process_alive(pid), "the container's process {pid} is still alive");
        }
        let rooted = processes_rooted_under(&self.dir);
        assert!(rooted.is_empty(), "processes still rooted in the bundle: {rooted:?}");
    }
}

impl Default for BusyboxBundle {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for BusyboxBundle {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new(&self.runtime)
                .arg("--root")
                .arg(self.state_root())
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(&["kill", self.id(), "KILL"]);
        quiet(&["delete", "--force", self.id()]);
        for hierarchy in cgroup_hierarchies() {
            remove_cgroup_tree(&hierarchy.join(self.cgroup_name()));
        }
        for mount in mounts_under(&self.dir).into_iter().rev() {
            let _ = Command::new("umount").arg("--lazy").arg(&mount).status();
        }
        if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
    }
}

/// runc's `spec` default, adjusted for tests: no terminal, a writable root, cgroup `/NAME`.
/// Public so the benchmark runs exactly the tests' container.
pub fn default_config(name: &str) -> Value {
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["true"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true,
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "sched-test",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] },
        ],
        "linux": {
            "cgroupsPath": format!("/{name}"),
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" },
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    })
}

/// busybox + one absolute symlink per applet, the mount points, and users root and tester (1000).
fn build_rootfs(rootfs: &Path) -> io::Result<()> {
    let busybox = host_busybox();
    for dir in ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc", "tmp", "root"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    fs::copy(&busybox, rootfs.join("bin/busybox"))?;
    let list = Command::new(&busybox).arg("--list-full").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = rootfs.join(applet.trim_start_matches('/'));
        if link.file_name().is_some_and(|n| n != "busybox") && !link.exists() {
            if let Some(parent) = link.parent() {
                fs::create_dir_all(parent)?;
            }
            symlink("/bin/busybox", &link)?;
        }
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000:tester:/tmp:/bin/sh\n")?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\ntester:x:1000:\nextra:x:2000:\n")?;
    Ok(())
}

/// Removes cgroup `parent` (e.g. `/sched-test-x`, an agent's or podman's cgroup parent) and the
/// empty cgroups directly under it, in every hierarchy. Errors are ignored: cleanup of a test.
pub fn remove_cgroup_parent(parent: &str) {
    for hierarchy in cgroup_hierarchies() {
        let dir = hierarchy.join(parent.trim_start_matches('/'));
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten().filter(|e| e.path().is_dir()) {
                let _ = fs::remove_dir(entry.path());
            }
        }
        let _ = fs::remove_dir(&dir);
    }
}

/// Every mounted cgroup hierarchy under /sys/fs/cgroup: the v1 controller dirs, the hybrid
/// `unified` cgroup2, or /sys/fs/cgroup itself on a pure cgroup v2 host.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(root) {
        for entry in entries.flatten() {
            let path = entry.path();
            // Skip the `cpu -> cpu,cpuacct` style symlinks: the real dir is listed too.
            let is_symlink = entry.file_type().map(|t| t.is_symlink()).unwrap_or(true);
            if !is_symlink && path.join("cgroup.procs").exists() {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The hierarchy a controller's files live in: its v1 dir (`cpu` in `cpu,cpuacct` too), else the
/// cgroup2 root.
pub fn cgroup_dir_for(controller: &str) -> PathBuf {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return root.to_path_buf();
    }
    cgroup_hierarchies()
        .into_iter()
        .find(|h| h.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.split(',').any(|c| c == controller)))
        .unwrap_or_else(|| root.join("unified"))
}

/// True when `/sys/fs/cgroup/<controller>` is a v1 hierarchy (hybrid or v1 hosts).
pub fn is_cgroup_v1(controller: &str) -> bool {
    cgroup_dir_for(controller) != Path::new(CGROUP_ROOT) && cgroup_dir_for(controller) != Path::new(CGROUP_ROOT).join("unified")
}

/// Kills every process in the cgroup tree at `dir` and removes its dirs, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    for _ in 0..200 {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).stderr(Stdio::null()).status();
        }
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        sleep(Duration::from_millis(10));
    }
    eprintln!("warning: could not remove cgroup {}", dir.display());
}

/// Mount points in this (the host's) mount namespace at or under `dir`, in mountinfo order.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
        .filter(|point| point == &prefix || point.starts_with(&format!("{prefix}/")))
        .collect()
}

/// True if `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state field follows the parenthesised command, which may itself contain spaces.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Live processes whose root or cwd is at or under `dir` (what a leaked container looks like).
pub fn processes_rooted_under(dir: &Path) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let rooted =
            ["root", "cwd"].iter().any(|link| fs::read_link(format!("/proc/{pid}/{link}")).is_ok_and(|target| target.starts_with(dir)));
        if rooted && process_alive(pid) {
            found.push(pid);
        }
    }
    found
}
