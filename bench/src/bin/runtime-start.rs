//! Container start latency: sched-runtime beside runc, interleaved in one run.
//!
//! How to run (as root, on the machine whose figures you want):
//!
//! ```text
//! cargo build --release -p runtime -p sched-bench
//! target/release/runtime-start                 # 50 iterations of each operation and runtime
//! target/release/runtime-start --iterations 200 --sched target/release/sched-runtime --runc /usr/sbin/runc
//! target/release/runtime-start --seccomp       # both runtimes with the tasks' default profile
//! target/release/runtime-start --userns        # both runtimes with a new user namespace
//! ```
//!
//! On a busybox-static bundle (the default config of `runc spec`: new pid, mount, ipc, uts,
//! network and cgroup namespaces, the usual mounts, masked paths, 3 capabilities, a cgroup per
//! container) it times, per iteration and per runtime:
//! - `create+start+delete`: `create`, `start`, wait until the container's process (from
//!   `--pid-file`) has exited, `delete`;
//! - `run true`: a foreground `run` of `true` (create, start, wait, delete in one call).
//!
//! With `--seccomp` the bundle carries the seccomp profile every task gets from the agent
//! (Docker's default, `runtime/src/default_seccomp.json`): the start-up cost of that profile.
//! With `--userns` every container gets a new user namespace mapping 65536 ids (podman's
//! `--userns=auto` shape): sched-runtime idmaps the rootfs, runc 1.1 leaves it as it is.
//!
//! The runtimes alternate inside every iteration (and swap who goes first each iteration), so
//! both see the same machine load. It prints min / median / max in milliseconds and the ratio of
//! medians sched/runc. Every container gets its own cgroup at the hierarchy root
//! (`/sched-bench-<pid>-<runtime>-<n>`), which the runtimes remove on delete.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

/// The operations measured, in table order.
const OPERATIONS: [&str; 2] = ["create+start+delete", "run true"];

/// How long a started container may take to exit before the benchmark gives up.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

struct Options {
    iterations: usize,
    sched: PathBuf,
    runc: PathBuf,
    /// Give every container the tasks' default seccomp profile.
    seccomp: bool,
    /// Run every container in a new user namespace (container 0..65536 -> host 300000..),
    /// as podman's `--userns=auto` does.
    userns: bool,
}

fn parse_options() -> Result<Options> {
    let exe = std::env::current_exe().context("find the benchmark's own path")?;
    let profile_dir = exe.parent().context("the benchmark lives in target/<profile>/")?;
    let mut options = Options {
        iterations: 50,
        sched: profile_dir.join("sched-runtime"),
        runc: PathBuf::from("/usr/sbin/runc"),
        seccomp: false,
        userns: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--iterations" | "-n" => {
                options.iterations = value("--iterations")?.parse().context("--iterations takes a positive number")?;
            }
            "--sched" => options.sched = PathBuf::from(value("--sched")?),
            "--runc" => options.runc = PathBuf::from(value("--runc")?),
            "--seccomp" => options.seccomp = true,
            "--userns" => options.userns = true,
            "--help" | "-h" => {
                println!(
                    "usage: runtime-start [--iterations N (50)] [--sched PATH \
                     (target/release/sched-runtime)] [--runc PATH (/usr/sbin/runc)] [--seccomp] [--userns]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    ensure!(options.iterations > 0, "--iterations must be at least 1");
    for (name, path) in [("--sched", &options.sched), ("--runc", &options.runc)] {
        ensure!(
            path.exists(),
            "{name} {} does not exist (build sched-runtime with `cargo build --release -p \
             runtime`, install runc with `apt-get install runc`)",
            path.display()
        );
    }
    Ok(options)
}

/// One runtime under test, with its own state root.
struct Runtime {
    label: &'static str,
    binary: PathBuf,
    root: PathBuf,
}

impl Runtime {
    /// Runs one CLI call (stdin and stdout on /dev/null); fails with its stderr if it fails.
    fn call(&self, args: &[&str]) -> Result<()> {
        // stderr goes to a file, not a pipe: the container inherits it, and after `create` it
        // would hold a pipe open until it exits.
        let stderr_path = self.root.with_extension("stderr");
        let stderr = fs::File::create(&stderr_path).context("create the stderr capture file")?;
        let status = Command::new(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .status()
            .with_context(|| format!("start {}", self.binary.display()))?;
        ensure!(
            status.success(),
            "{} {args:?} failed ({status}): {}",
            self.label,
            fs::read_to_string(&stderr_path).unwrap_or_default().trim()
        );
        Ok(())
    }

    /// Best-effort cleanup after a failed iteration.
    fn force_delete(&self, id: &str) {
        let _ = Command::new(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "--force", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The temp dir with the bundle and both state roots; removed on drop.
struct Workspace {
    dir: PathBuf,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn busybox() -> Result<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("busybox is missing: apt-get install busybox-static")
}

/// rootfs with a static busybox and the applets the benchmark uses.
fn build_rootfs(rootfs: &Path) -> Result<()> {
    for dir in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    fs::copy(busybox()?, rootfs.join("bin/busybox")).context("copy busybox into the rootfs")?;
    for applet in ["sh", "true"] {
        symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    Ok(())
}

/// `runc spec`'s default config (no terminal, read-only root), running `/bin/true` in cgroup
/// `cgroup_path`: the tests' default bundle config with runc's read-only root; with `seccomp`,
/// the tasks' default seccomp profile; with `userns`, a new user namespace mapping 65536 ids.
fn config(cgroup_path: &str, seccomp: bool, userns: bool) -> Result<Value> {
    let mut config = sched_tests::bundle::default_config(cgroup_path.trim_start_matches('/'));
    if seccomp {
        config["linux"]["seccomp"] = serde_json::to_value(runtime::default_seccomp::default_seccomp())?;
    }
    if userns {
        let range = json!([{ "containerID": 0, "hostID": 300_000, "size": 65536 }]);
        config["linux"]["namespaces"].as_array_mut().context("namespaces is an array")?.push(json!({ "type": "user" }));
        config["linux"]["uidMappings"] = range.clone();
        config["linux"]["gidMappings"] = range;
    }
    config["process"]["args"] = json!(["/bin/true"]);
    config["root"]["readonly"] = json!(true);
    config["hostname"] = json!("bench");
    Ok(config)
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z"))
}

/// create, start, wait for the process to exit, delete.
fn create_start_delete(runtime: &Runtime, bundle: &Path, id: &str) -> Result<Duration> {
    let pid_file = bundle.parent().context("bundle parent")?.join(format!("{id}.pid"));
    let bundle_arg = bundle.to_string_lossy();
    let pid_arg = pid_file.to_string_lossy();
    let started = Instant::now();
    runtime.call(&["create", "--bundle", &bundle_arg, "--pid-file", &pid_arg, id])?;
    runtime.call(&["start", id])?;
    let pid: i32 = fs::read_to_string(&pid_file)
        .with_context(|| format!("{} wrote no pid file", runtime.label))?
        .trim()
        .parse()
        .context("the pid file holds a number")?;
    while alive(pid) {
        ensure!(started.elapsed() < EXIT_TIMEOUT, "{} container {id} did not exit", runtime.label);
        sleep(Duration::from_micros(100));
    }
    runtime.call(&["delete", id])?;
    let elapsed = started.elapsed();
    let _ = fs::remove_file(pid_file);
    Ok(elapsed)
}

/// A foreground `run` of `true`.
fn run_true(runtime: &Runtime, bundle: &Path, id: &str) -> Result<Duration> {
    let started = Instant::now();
    runtime.call(&["run", "--bundle", &bundle.to_string_lossy(), id])?;
    Ok(started.elapsed())
}

/// min, median, max in milliseconds.
fn summary(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = samples.len();
    let median = if n % 2 == 1 { ms(samples[n / 2]) } else { (ms(samples[n / 2 - 1]) + ms(samples[n / 2])) / 2.0 };
    (ms(samples[0]), median, ms(samples[n - 1]))
}

fn main() -> Result<()> {
    let options = parse_options()?;
    let workspace = Workspace { dir: std::env::temp_dir().join(format!("sched-bench-{}", std::process::id())) };
    let bundle = workspace.dir.join("bundle");
    build_rootfs(&bundle.join("rootfs"))?;
    let runtimes = [
        Runtime { label: "sched-runtime", binary: options.sched.clone(), root: workspace.dir.join("state-sched") },
        Runtime { label: "runc", binary: options.runc.clone(), root: workspace.dir.join("state-runc") },
    ];
    // samples[runtime][operation]
    let mut samples = vec![vec![Vec::with_capacity(options.iterations); OPERATIONS.len()]; runtimes.len()];

    for iteration in 0..options.iterations {
        let mut order: Vec<usize> = (0..runtimes.len()).collect();
        if iteration % 2 == 1 {
            order.reverse();
        }
        for &r in &order {
            let runtime = &runtimes[r];
            for (o, operation) in OPERATIONS.iter().enumerate() {
                let id = format!("sched-bench-{}-{r}-{o}-{iteration}", std::process::id());
                let config = config(&format!("/{id}"), options.seccomp, options.userns)?;
                fs::write(bundle.join("config.json"), serde_json::to_vec(&config)?)?;
                let timed = match o {
                    0 => create_start_delete(runtime, &bundle, &id),
                    _ => run_true(runtime, &bundle, &id),
                };
                match timed {
                    Ok(elapsed) => samples[r][o].push(elapsed),
                    Err(e) => {
                        runtime.force_delete(&id);
                        return Err(e.context(format!("{} {operation}, iteration {iteration}", runtime.label)));
                    }
                }
            }
        }
    }

    let profile = if options.seccomp { " with the default seccomp profile" } else { "" };
    let userns = if options.userns { " in a new user namespace (65536 ids mapped)" } else { "" };
    println!("container start on a busybox bundle{profile}{userns}, {} iterations, runtimes interleaved\n", options.iterations);
    println!("| runtime | operation | min ms | median ms | max ms |");
    println!("|---|---|---:|---:|---:|");
    let mut medians = vec![[0.0; OPERATIONS.len()]; runtimes.len()];
    for (o, operation) in OPERATIONS.iter().enumerate() {
        for (r, runtime) in runtimes.iter().enumerate() {
            let (min, median, max) = summary(&mut samples[r][o]);
            medians[r][o] = median;
            println!("| {} | {operation} | {min:.1} | {median:.1} | {max:.1} |", runtime.label);
        }
    }
    println!();
    for (o, operation) in OPERATIONS.iter().enumerate() {
        println!("ratio sched-runtime/runc of medians, {operation}: {:.2}x", medians[0][o] / medians[1][o]);
    }
    Ok(())
}
