//! Image config -> OCI runtime spec: the process (entrypoint + cmd with docker's override
//! rules, env merged with overrides, working dir, user resolved through the image's
//! `/etc/passwd` and `/etc/group`), the rootfs path, and the image's exposed ports and stop
//! signal as annotations (`org.opencontainers.image.stopSignal`, `sched.image.exposedPorts`).
//!
//! The image's `/etc/passwd` is untrusted: it is opened with `RESOLVE_IN_ROOT`, so a symlink
//! in the image resolves inside the rootfs, never to the host's files.
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::RegistryError;
use super::error::{ImageError, IoContext, Result};
use super::manifest::ImageConfig;

/// The stop-signal annotation (the OCI image spec's name for it).
pub const STOP_SIGNAL_ANNOTATION: &str = "org.opencontainers.image.stopSignal";
/// Exposed ports, comma-separated `PORT/PROTO`.
pub const EXPOSED_PORTS_ANNOTATION: &str = "sched.image.exposedPorts";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a service or the command line overrides of the image's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessOverrides {
    /// Replaces the image's entrypoint; the image's cmd is then dropped (as in docker).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's cmd.
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` entries; a key already in the image's env is replaced.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`.
    pub user: Option<String>,
}

/// A resolved process identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The home directory from /etc/passwd, for `HOME`.
    pub home: Option<String>,
}

/// Fills `base` (e.g. the runtime's default spec) from the image config and overrides, with
/// `rootfs` as the root path.
pub fn config_to_spec(config: &ImageConfig, rootfs: &Path, overrides: &ProcessOverrides, mut base: Spec) -> Result<Spec> {
    let c = config.config.clone().unwrap_or_default();
    let args = command_line(c.entrypoint.as_deref(), c.cmd.as_deref(), overrides)?;
    let user_spec = overrides.user.clone().or(c.user.clone()).unwrap_or_default();
    let user = resolve_user(rootfs, &user_spec)?;
    let mut env = merge_env(c.env.as_deref().unwrap_or(&[]), &overrides.env);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home.clone().unwrap_or_else(|| "/".into())));
    }
    let cwd = overrides.working_dir.clone().or(c.working_dir.clone()).filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(invalid(format!("working dir {cwd:?} must be absolute")));
    }

    let mut process = base.process().clone().unwrap_or_default();
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(cwd));
    let mut u = process.user().clone();
    u.set_uid(user.uid);
    u.set_gid(user.gid);
    u.set_additional_gids(if user.additional_gids.is_empty() { None } else { Some(user.additional_gids.clone()) });
    process.set_user(u);
    base.set_process(Some(process));

    let mut root = base.root().clone().unwrap_or_default();
    root.set_path(rootfs.to_path_buf());
    base.set_root(Some(root));

    let mut annotations = base.annotations().clone().unwrap_or_default();
    if let Some(sig) = c.stop_signal.filter(|s| !s.is_empty()) {
        annotations.insert(STOP_SIGNAL_ANNOTATION.to_string(), sig);
    }
    let ports = exposed_ports(config);
    if !ports.is_empty() {
        annotations.insert(EXPOSED_PORTS_ANNOTATION.to_string(), ports.join(","));
    }
    base.set_annotations(Some(annotations));
    Ok(base)
}

/// The image's exposed ports as `PORT/PROTO` (protocol defaults to tcp), sorted.
pub fn exposed_ports(config: &ImageConfig) -> Vec<String> {
    let mut out: Vec<String> = config
        .config
        .as_ref()
        .and_then(|c| c.exposed_ports.as_ref())
        .map(|p| p.keys().map(|k| if k.contains('/') { k.clone() } else { format!("{k}/tcp") }).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Docker's rule: an overridden entrypoint drops the image's cmd unless cmd is overridden too.
pub fn command_line(entrypoint: Option<&[String]>, cmd: Option<&[String]>, o: &ProcessOverrides) -> Result<Vec<String>> {
    let (entrypoint, cmd): (Vec<String>, Vec<String>) = match (&o.entrypoint, &o.cmd) {
        (Some(e), Some(c)) => (e.clone(), c.clone()),
        (Some(e), None) => (e.clone(), Vec::new()),
        (None, Some(c)) => (entrypoint.unwrap_or_default().to_vec(), c.clone()),
        (None, None) => (entrypoint.unwrap_or_default().to_vec(), cmd.unwrap_or_default().to_vec()),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(invalid("the image has no entrypoint or cmd and none was given; pass a command".into()));
    }
    Ok(args)
}

/// The image's env with overrides: same key replaced in place, new keys appended.
pub fn merge_env(image: &[String], overrides: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e.to_string(), |(k, _)| k.to_string());
    let mut out: Vec<String> = image.to_vec();
    for o in overrides {
        let k = key(o);
        match out.iter_mut().find(|e| key(e) == k) {
            Some(slot) => *slot = o.clone(),
            None => out.push(o.clone()),
        }
    }
    out
}

/// Resolves `user`, `uid`, `user:group`, `uid:gid` (empty = root) through the rootfs's
/// /etc/passwd and /etc/group. Numeric ids need no entry; names must exist.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser> {
    let unknown = |reason: String| ImageError::UnknownUser { user: spec.to_string(), reason };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd")?;
    let group = read_in_root(rootfs, "etc/group")?;
    let passwd_entries: Vec<Vec<&str>> = passwd.lines().map(|l| l.split(':').collect()).filter(|f: &Vec<&str>| f.len() >= 4).collect();
    let group_entries: Vec<Vec<&str>> = group.lines().map(|l| l.split(':').collect()).filter(|f: &Vec<&str>| f.len() >= 3).collect();

    let (uid, mut gid, name, home) = if user_part.is_empty() {
        (0, 0, Some("root".to_string()), None)
    } else if let Ok(uid) = user_part.parse::<u32>() {
        let entry = passwd_entries.iter().find(|f| f[2].parse() == Ok(uid));
        let gid = entry.and_then(|f| f[3].parse().ok()).unwrap_or(0);
        (uid, gid, entry.map(|f| f[0].to_string()), entry.and_then(|f| f.get(5)).map(|h| h.to_string()))
    } else {
        let f = passwd_entries
            .iter()
            .find(|f| f[0] == user_part)
            .ok_or_else(|| unknown(format!("no user {user_part:?} in the image's /etc/passwd")))?;
        let uid = f[2].parse().map_err(|_| unknown(format!("bad uid in /etc/passwd for {user_part:?}")))?;
        let gid = f[3].parse().map_err(|_| unknown(format!("bad gid in /etc/passwd for {user_part:?}")))?;
        (uid, gid, Some(user_part.to_string()), f.get(5).map(|h| h.to_string()))
    };
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_entries
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| unknown(format!("no group {g:?} in the image's /etc/group")))?,
        };
    }
    let mut additional_gids: Vec<u32> = match (&name, group_part) {
        // docker adds the user's supplementary groups unless a group is given explicitly
        (Some(n), None) => group_entries
            .iter()
            .filter(|f| f.get(3).is_some_and(|members| members.split(',').any(|m| m == n)))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        _ => Vec::new(),
    };
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(ResolvedUser { uid, gid, additional_gids, home: home.filter(|h| !h.is_empty()) })
}

/// Reads `rel` with the rootfs as `/` for symlink resolution; a missing file reads as empty.
fn read_in_root(rootfs: &Path, rel: &str) -> Result<String> {
    let root = rustix::fs::open(rootfs, OFlags::DIRECTORY | OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).at(rootfs)?;
    let path = rootfs.join(rel);
    match rustix::fs::openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => {
            let mut s = String::new();
            std::fs::File::from(fd).take(4 << 20).read_to_string(&mut s).at(&path)?;
            Ok(s)
        }
        Err(rustix::io::Errno::NOENT) => Ok(String::new()),
        Err(e) => Err(e).at(path),
    }
}

fn invalid(reason: String) -> ImageError {
    RegistryError::InvalidConfig { what: "process".into(), reason }.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::manifest::ContainerConfig;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker_override_rules() {
        let (e, c) = (s(&["/bin/sh", "-c"]), s(&["echo hi"]));
        let none = ProcessOverrides::default();
        assert_eq!(command_line(Some(&e), Some(&c), &none).unwrap(), s(&["/bin/sh", "-c", "echo hi"]));
        let cmd = ProcessOverrides { cmd: Some(s(&["date"])), ..Default::default() };
        assert_eq!(command_line(Some(&e), Some(&c), &cmd).unwrap(), s(&["/bin/sh", "-c", "date"]));
        let ep = ProcessOverrides { entrypoint: Some(s(&["/bin/true"])), ..Default::default() };
        assert_eq!(command_line(Some(&e), Some(&c), &ep).unwrap(), s(&["/bin/true"]));
        assert!(command_line(None, None, &none).is_err());
    }

    #[test]
    fn env_overrides_replace_by_key_and_append_new_keys() {
        let merged = merge_env(&s(&["PATH=/bin", "A=1"]), &s(&["A=2", "B=3"]));
        assert_eq!(merged, s(&["PATH=/bin", "A=2", "B=3"]));
    }

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1000::/home/web:/bin/sh\n").unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nweb:x:1000:\nstaff:x:50:web,other\nwheel:x:10:web\n").unwrap();
        d
    }

    #[test]
    fn users_resolve_through_the_images_passwd_and_group() {
        let r = rootfs();
        let u = resolve_user(r.path(), "web").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids.clone(), u.home.as_deref()), (1000, 1000, vec![10, 50], Some("/home/web")));
        let u = resolve_user(r.path(), "web:staff").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1000, 50, vec![]));
        let u = resolve_user(r.path(), "4242:7").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 7));
        let u = resolve_user(r.path(), "").unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert!(resolve_user(r.path(), "nobody").unwrap_err().to_string().contains("no user"));
        assert!(resolve_user(r.path(), "web:nogroup").is_err());
    }

    #[test]
    fn a_passwd_symlink_resolves_inside_the_rootfs_not_on_the_host() {
        let r = tempfile::tempdir().unwrap();
        std::fs::create_dir(r.path().join("etc")).unwrap();
        // An escape towards a host file (/etc/os-release) must resolve to the image's own (missing)
        // file instead: the user is unknown rather than read from the host.
        std::os::unix::fs::symlink("../../../../etc/os-release", r.path().join("etc/passwd")).unwrap();
        let err = resolve_user(r.path(), "root").unwrap_err().to_string();
        assert!(err.contains("no user"), "{err}");
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        std::fs::write(r.path().join("etc/passwd.img"), "app:x:7:8::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd.img", r.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve_user(r.path(), "app").unwrap().uid, 7, "absolute links resolve in the rootfs");
    }

    #[test]
    fn spec_carries_process_root_ports_and_stop_signal() {
        let r = rootfs();
        let config = ImageConfig {
            config: Some(ContainerConfig {
                user: Some("web".into()),
                env: Some(s(&["FOO=bar"])),
                entrypoint: Some(s(&["/app"])),
                cmd: Some(s(&["--port", "80"])),
                working_dir: Some("/srv".into()),
                exposed_ports: Some([("80/tcp".to_string(), serde_json::json!({})), ("53/udp".to_string(), serde_json::json!({}))].into()),
                stop_signal: Some("SIGQUIT".into()),
                labels: None,
            }),
            ..Default::default()
        };
        let o = ProcessOverrides { env: s(&["FOO=baz"]), ..Default::default() };
        let spec = config_to_spec(&config, r.path(), &o, Spec::default()).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &s(&["/app", "--port", "80"]));
        let env = p.env().as_ref().unwrap();
        assert!(env.contains(&"FOO=baz".to_string()) && env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
        assert!(env.contains(&"HOME=/home/web".to_string()), "{env:?}");
        assert_eq!(p.cwd(), Path::new("/srv"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(spec.root().as_ref().unwrap().path(), r.path());
        let a = spec.annotations().as_ref().unwrap();
        assert_eq!(a[STOP_SIGNAL_ANNOTATION], "SIGQUIT");
        assert_eq!(a[EXPOSED_PORTS_ANNOTATION], "53/udp,80/tcp");
    }
}
