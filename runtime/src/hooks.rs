//! OCI hooks: programs the spec asks the runtime to run at points of a container's life, each
//! given the container's state as JSON on its stdin and killed when it outlives its `timeout`.
//!
//! | stage | run by | namespaces | when | a failure |
//! |---|---|---|---|---|
//! | `prestart`, `createRuntime` | the runtime (`create`) | the runtime's | the container's namespaces and mounts exist, before `pivot_root` | fails `create` |
//! | `createContainer` | the container's init | the container's (mount namespace before `pivot_root`) | right after the above | fails `create` |
//! | `startContainer` | the container's init | the container's, after `pivot_root` | `start`, before the program is exec'd | fails `start`, the init exits |
//! | `poststart` | the runtime (`start`) | the runtime's | the program runs | fails `start` and kills the container, as runc does |
//! | `poststop` | the runtime (`delete`) | the runtime's | the container is gone | logged; delete goes on |
//!
//! Hooks run in the order the spec lists them; the first failure stops the rest of its stage.
//! Their stdout and stderr go to the runtime's stderr.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};

/// A point of a container's life where hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Stage {
    /// Every stage, in the order of a container's life.
    pub const ALL: [Stage; 6] =
        [Stage::Prestart, Stage::CreateRuntime, Stage::CreateContainer, Stage::StartContainer, Stage::Poststart, Stage::Poststop];

    /// The hooks of this stage in `hooks`.
    pub fn of(self, hooks: &Hooks) -> &[Hook] {
        #[allow(deprecated)]
        let list = match self {
            Stage::Prestart => hooks.prestart(),
            Stage::CreateRuntime => hooks.create_runtime(),
            Stage::CreateContainer => hooks.create_container(),
            Stage::StartContainer => hooks.start_container(),
            Stage::Poststart => hooks.poststart(),
            Stage::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or(&[])
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Prestart => "prestart",
            Stage::CreateRuntime => "createRuntime",
            Stage::CreateContainer => "createContainer",
            Stage::StartContainer => "startContainer",
            Stage::Poststart => "poststart",
            Stage::Poststop => "poststop",
        })
    }
}

/// What went wrong with a hook; each names the stage, the hook's index and its path.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The spec's hook cannot be run as written.
    #[error("hooks.{stage}[{index}] ({path}): {reason}")]
    Invalid { stage: Stage, index: usize, path: String, reason: String },
    /// The program could not be started.
    #[error("{stage} hook {index} ({path}) could not be started: {source}")]
    Spawn { stage: Stage, index: usize, path: String, source: std::io::Error },
    /// The program ended without success.
    #[error("{stage} hook {index} ({path}) failed: {status}")]
    Failed { stage: Stage, index: usize, path: String, status: ExitStatus },
    /// The program outlived its timeout and was killed.
    #[error("{stage} hook {index} ({path}) did not finish within its timeout of {timeout}s and was killed")]
    Timeout { stage: Stage, index: usize, path: String, timeout: i64 },
    /// Waiting for the program failed.
    #[error("{stage} hook {index} ({path}): {source}")]
    Wait { stage: Stage, index: usize, path: String, source: std::io::Error },
}

/// Checks every hook of the spec: an absolute path, a positive timeout, `KEY=VALUE`
/// environment entries, no NUL byte anywhere.
pub fn validate(hooks: &Hooks) -> Result<(), HookError> {
    for stage in Stage::ALL {
        for (index, hook) in stage.of(hooks).iter().enumerate() {
            let path = hook.path().display().to_string();
            let invalid = |reason: String| HookError::Invalid { stage, index, path: path.clone(), reason };
            if !hook.path().is_absolute() {
                return Err(invalid("path must be absolute".into()));
            }
            if let Some(t) = hook.timeout()
                && t <= 0
            {
                return Err(invalid(format!("timeout must be greater than zero, not {t}")));
            }
            let words = hook.args().iter().flatten().chain(hook.env().iter().flatten());
            if path.contains('\0') || words.clone().any(|w| w.contains('\0')) {
                return Err(invalid("args, env and path may not contain a NUL byte".into()));
            }
            if let Some(bad) = hook.env().iter().flatten().find(|e| !e.contains('=')) {
                return Err(invalid(format!("env entry {bad:?} is not KEY=VALUE")));
            }
        }
    }
    Ok(())
}

/// Runs the hooks of `stage`, in order, each with `state` (the state JSON) on its stdin.
pub fn run(stage: Stage, hooks: Option<&Hooks>, state: &[u8]) -> Result<(), HookError> {
    for (index, hook) in hooks.map(|h| stage.of(h)).unwrap_or(&[]).iter().enumerate() {
        run_one(stage, index, hook, state)?;
    }
    Ok(())
}

fn run_one(stage: Stage, index: usize, hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let path = hook.path().display().to_string();
    let mut command = Command::new(hook.path());
    if let Some(args) = hook.args()
        && let Some((arg0, rest)) = args.split_first()
    {
        command.arg0(arg0).args(rest);
    }
    command.env_clear();
    for entry in hook.env().iter().flatten() {
        let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
        command.env(key, value);
    }
    // The hook's stdout must not end up in what the runtime prints (`state`, a shim's pid).
    let stdout = std::io::stderr().as_fd().try_clone_to_owned().map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    command.stdin(Stdio::piped()).stdout(stdout).stderr(Stdio::inherit());
    let mut child = command.spawn().map_err(|source| HookError::Spawn { stage, index, path: path.clone(), source })?;
    let timeout = hook.timeout().map(|t| (t, Duration::from_secs(t.max(1) as u64)));
    let status = feed_and_wait(&mut child, state, timeout.map(|(_, d)| d));
    match status {
        Ok(Some(status)) if status.success() => Ok(()),
        Ok(Some(status)) => Err(HookError::Failed { stage, index, path, status }),
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(HookError::Timeout { stage, index, path, timeout: timeout.map(|(t, _)| t).unwrap_or_default() })
        }
        Err(source) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(HookError::Wait { stage, index, path, source })
        }
    }
}

/// Writes `state` to the child's stdin without ever blocking (a hook that does not read its
/// stdin must still time out) and waits for it. `None` when `timeout` passed first.
fn feed_and_wait(child: &mut Child, state: &[u8], timeout: Option<Duration>) -> std::io::Result<Option<ExitStatus>> {
    let started = Instant::now();
    let mut stdin = child.stdin.take();
    if let Some(pipe) = &stdin {
        let flags = nix::fcntl::fcntl(pipe.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(pipe.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
    }
    let mut written = 0;
    let mut pause = Duration::from_micros(100);
    loop {
        if let Some(pipe) = stdin.as_mut() {
            match pipe.write(&state[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // The hook closed its stdin (EPIPE): it does not want the rest.
                Err(_) => written = state.len(),
            }
            if written == state.len() {
                stdin = None;
            }
        }
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(json: serde_json::Value) -> Hooks {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_relative_path_is_refused_naming_the_hook() {
        let err = validate(&hooks(serde_json::json!({"poststop": [{"path": "/bin/true"}, {"path": "bin/true"}]}))).unwrap_err();
        assert_eq!(err.to_string(), "hooks.poststop[1] (bin/true): path must be absolute");
    }

    #[test]
    fn a_timeout_must_be_positive() {
        let err = validate(&hooks(serde_json::json!({"createRuntime": [{"path": "/bin/true", "timeout": 0}]}))).unwrap_err();
        assert_eq!(err.to_string(), "hooks.createRuntime[0] (/bin/true): timeout must be greater than zero, not 0");
    }

    #[test]
    fn env_entries_are_key_value() {
        let err = validate(&hooks(serde_json::json!({"prestart": [{"path": "/bin/true", "env": ["A=1", "B"]}]}))).unwrap_err();
        assert_eq!(err.to_string(), "hooks.prestart[0] (/bin/true): env entry \"B\" is not KEY=VALUE");
    }

    #[test]
    fn a_hook_gets_the_state_on_stdin_and_its_args_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("cat > {0}; echo \"$0 $1 $HOOK_VAR\" >> {0}", out.display());
        let h = hooks(
            serde_json::json!({"poststart": [{"path": "/bin/sh", "args": ["hook-name", "-c", script, "zero", "one"], "env": ["HOOK_VAR=v"]}]}),
        );
        run(Stage::Poststart, Some(&h), b"{\"id\":\"x\"}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"id\":\"x\"}\nzero one v\n");
    }

    #[test]
    fn a_hook_that_outlives_its_timeout_is_killed() {
        let h = hooks(serde_json::json!({"poststop": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]}));
        let started = Instant::now();
        let err = run(Stage::Poststop, Some(&h), &vec![b'x'; 1 << 20]).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "killed at its timeout, not after it ended");
        assert_eq!(err.to_string(), "poststop hook 0 (/bin/sleep) did not finish within its timeout of 1s and was killed");
    }

    #[test]
    fn a_failing_hook_stops_its_stage() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("second-ran");
        let h = hooks(serde_json::json!({"prestart": [
            {"path": "/bin/false"},
            {"path": "/bin/touch", "args": ["touch", marker]},
        ]}));
        let err = run(Stage::Prestart, Some(&h), b"{}").unwrap_err().to_string();
        assert!(err.starts_with("prestart hook 0 (/bin/false) failed: exit status: 1"), "{err}");
        assert!(!marker.exists());
    }
}
