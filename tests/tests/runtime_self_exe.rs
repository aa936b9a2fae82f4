//! The runtime binary out of a container's reach (CVE-2019-5736 class, issue 11 point 3).
//!
//! The container's entrypoint is `/proc/self/exe`: the init, a fork of the runtime, makes the
//! kernel execute the runtime's binary inside the container (its loader and libraries come from
//! the rootfs, copied there as an attacker's image would carry them). It blocks opening a FIFO
//! (`--log /hold`). A second process exec'd into the container opens `/proc/<init>/exe` and
//! keeps the descriptor, lets the init finish, and keeps trying to reopen the descriptor for
//! writing while "Text file busy" says a runtime process still executes the binary. Once
//! `create`, `start` and `exec` have exited (as under podman) nothing does: on a vulnerable
//! runtime the write goes through to the host's binary. The test runs a private copy of the
//! runtime binary, so a vulnerable build cannot damage the shared one, and compares its hash.
//!
//! No pid namespace: the exec'd process must outlive the init (podman `--pid=host` does the
//! same).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sched_tests::bundle::{BusyboxBundle, runtime_binary};
use sha2::{Digest as _, Sha256};

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).expect("read the runtime copy")))
}

/// Copies the dynamic loader and the shared libraries `ldd` lists for `binary` into `rootfs`.
fn copy_shared_libraries(binary: &Path, rootfs: &Path) {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    for lib in text.split_whitespace().filter(|w| w.starts_with('/')) {
        let target = rootfs.join(lib.trim_start_matches('/'));
        fs::create_dir_all(target.parent().expect("a library path has a parent")).expect("create the library dir");
        fs::copy(lib, &target).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
    }
}

#[test]
fn a_container_cannot_write_the_runtime_binary_through_proc_self_exe() {
    let copy_dir = tempfile::Builder::new().prefix("sched-self-exe-").tempdir().expect("temp dir");
    let runtime = copy_dir.path().join("sched-runtime");
    fs::copy(runtime_binary(), &runtime).expect("copy the runtime binary");
    let before = sha256_file(&runtime);

    let bundle = BusyboxBundle::new().with_runtime(&runtime).without_namespace("pid").args(&["/proc/self/exe", "--log", "/hold", "list"]);
    copy_shared_libraries(&runtime, &bundle.rootfs());
    let hold = bundle.rootfs().join("hold");
    assert!(Command::new("mkfifo").arg(&hold).status().expect("mkfifo").success(), "mkfifo {}", hold.display());
    bundle.create().assert_success();
    let pid = bundle.state()["pid"].as_i64().expect("state has the init's pid");
    bundle.start().assert_success();

    // The init now runs the runtime binary, blocked opening /hold for writing.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"/proc/self/exe\0--log\0")) {
        assert!(Instant::now() < deadline, "the container's init never exec'd /proc/self/exe");
        std::thread::sleep(Duration::from_millis(10));
    }
    let attack = format!(
        r#"exec 3</proc/{pid}/exe || {{ echo "no-open" > /result.tmp; mv /result.tmp /result; exit 0; }}
cat /hold > /dev/null &
while :; do
  if err=$( {{ echo pwned >> /proc/self/fd/3; }} 2>&1 ); then echo written > /result.tmp; break; fi
  case "$err" in *busy*) usleep 10000 ;; *) echo "refused: $err" > /result.tmp; break ;; esac
done
mv /result.tmp /result"#
    );
    bundle.cli(&["exec", "--detach", bundle.id(), "sh", "-c", &attack]).assert_success();
    bundle.wait_for_file("result", Duration::from_secs(60));
    let result = fs::read_to_string(bundle.rootfs().join("result")).expect("read the result");
    assert!(result.starts_with("refused"), "the container wrote to the runtime binary: {result}");
    assert_eq!(sha256_file(&runtime), before, "the runtime binary changed");
}

/// As root the init re-executes from a detached read-only bind mount of the binary (the sealed
/// memfd copy is the fallback without CAP_SYS_ADMIN; its unit test runs as any user).
#[test]
fn as_root_the_protected_copy_is_a_read_only_clone_of_the_binary() {
    use std::os::fd::AsRawFd;
    let clone = runtime::self_exe::protected_copy().expect("a protected copy").expect("this test binary runs from a writable mount");
    let path = format!("/proc/self/fd/{}", clone.as_raw_fd());
    let file = fs::File::open(&path).expect("open the clone");
    let flags = nix::sys::statvfs::fstatvfs(&file).expect("statvfs of the clone").flags();
    assert!(flags.contains(nix::sys::statvfs::FsFlags::ST_RDONLY), "the clone sits on a read-only mount: {flags:?}");
    assert!(nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GET_SEALS).is_err(), "a mount, not the memfd fallback");
    let err = fs::OpenOptions::new().append(true).open(&path).expect_err("the clone opened for writing");
    // This test binary is being executed (ETXTBSY) unless the test runner copied it.
    assert!(matches!(err.raw_os_error(), Some(libc::EROFS) | Some(libc::ETXTBSY)), "{err}");
}
