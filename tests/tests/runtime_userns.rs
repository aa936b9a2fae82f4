//! User namespaces: root in a container with `linux.uidMappings`/`gidMappings` is an
//! unprivileged id on the host. A file it creates in a plain volume is owned by the mapped host
//! id; host-only writes fail; several ranges work; the rootfs is usable through an idmapped mount
//! or, where the filesystem cannot be idmapped (overlayfs here), through a recorded chown; a
//! volume with the `idmap` option is idmapped; bad mappings are refused naming the line.
//!
//! Run against runc with `SCHED_TEST_RUNTIME=/usr/sbin/runc cargo test -p sched-tests --test
//! runtime_userns` (runc chowns nothing and refuses the idmap option without mount mappings).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use sched_tests::bundle::BusyboxBundle;
use serde_json::{Value, json};

/// The first host id of the test containers' range (podman's --userns=auto range starts higher;
/// any range no real user has works).
const BASE: u32 = 300_000;

/// A bundle in a new user namespace mapping container 0..65536 to host BASE..BASE+65536.
fn userns_bundle() -> BusyboxBundle {
    mapped(BusyboxBundle::new(), json!([{ "containerID": 0, "hostID": BASE, "size": 65536 }]))
}

fn mapped(mut bundle: BusyboxBundle, ranges: Value) -> BusyboxBundle {
    let config = bundle.config_mut();
    config["linux"]["namespaces"].as_array_mut().unwrap().push(json!({ "type": "user" }));
    config["linux"]["uidMappings"] = ranges.clone();
    config["linux"]["gidMappings"] = ranges;
    bundle
}

/// A host directory for a volume, owned by `owner` (what an agent does for a task's volume).
fn volume(bundle: &BusyboxBundle, name: &str, owner: Option<u32>) -> String {
    let dir = bundle.dir().join(name);
    fs::create_dir_all(&dir).unwrap();
    if let Some(id) = owner {
        std::os::unix::fs::chown(&dir, Some(id), Some(id)).unwrap();
    }
    dir.to_string_lossy().into_owned()
}

/// The container's record of how its rootfs was made usable (state.json, `rootfs_ids`).
fn rootfs_ids(bundle: &BusyboxBundle) -> Value {
    let text = fs::read_to_string(bundle.state_root().join(bundle.id()).join("state.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["rootfs_ids"].clone()
}

#[test]
fn root_in_the_container_is_the_mapped_host_id() {
    let bundle = userns_bundle();
    let vol = volume(&bundle, "vol", Some(BASE));
    let bundle = bundle
        .mount("/vol", "bind", &vol, &["rbind", "rw"])
        .shell("id -u; id -g; cat /proc/self/uid_map; touch /vol/made /made-in-rootfs && echo wrote; sleep 30");
    bundle.create().assert_success();
    assert_eq!(rootfs_ids(&bundle), json!("idmapped"), "ext4 and tmpfs take idmapped mounts on this kernel");
    bundle.start().assert_success();
    let pid = bundle.state()["pid"].as_i64().unwrap();
    bundle.wait_for_file("/made-in-rootfs", std::time::Duration::from_secs(10));
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid_line.split_whitespace().nth(1), Some(BASE.to_string().as_str()), "the init runs as host uid {BASE}: {uid_line}");
    let made = fs::metadata(Path::new(&vol).join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (BASE, BASE), "root's file in a plain volume belongs to the mapped host id");
    let in_rootfs = fs::metadata(bundle.rootfs().join("made-in-rootfs")).unwrap();
    assert_eq!(in_rootfs.uid(), 0, "through the idmapped rootfs, container root's file is stored as container id 0");
    bundle.kill("KILL").assert_success();
}

/// The agent's data dir and rootfs dir are 0700: the container's root may not search them. The
/// init enters the rootfs's parent while it is still host root and reaches the rootfs from there.
#[test]
fn a_rootfs_below_directories_only_host_root_may_search_is_reached() {
    use std::os::unix::fs::PermissionsExt;
    let bundle = userns_bundle().shell("id -u; ls /bin/busybox");
    fs::set_permissions(bundle.dir(), fs::Permissions::from_mode(0o700)).unwrap();
    let out = bundle.run();
    out.assert_success();
    assert_eq!(out.stdout, "0\n/bin/busybox\n");
}

#[test]
fn host_only_writes_fail_even_with_every_capability() {
    let caps = ["CAP_SYS_ADMIN", "CAP_MKNOD", "CAP_DAC_OVERRIDE", "CAP_SYS_RAWIO", "CAP_SYS_MODULE"];
    let mut bundle = userns_bundle().capabilities(&caps).no_new_privileges(false);
    // Without the user namespace only these settings would stand between root and the host.
    bundle.config_mut()["linux"]["readonlyPaths"] = json!([]);
    bundle.config_mut()["linux"]["maskedPaths"] = json!([]);
    let bundle = bundle.shell(
        "echo h > /proc/sysrq-trigger && echo SYSRQ-WRITTEN; \
         mknod /tmp/mem c 1 1 && echo MKNOD-DONE; \
         echo 1 > /proc/sys/vm/drop_caches && echo SYSCTL-WRITTEN; echo end",
    );
    let out = bundle.run();
    out.assert_success();
    assert!(out.stdout.ends_with("end\n"), "{out:#?}");
    for leak in ["SYSRQ-WRITTEN", "MKNOD-DONE", "SYSCTL-WRITTEN"] {
        assert!(!out.stdout.contains(leak), "root in a user namespace did a host-only thing ({leak}): {out:#?}");
    }
    assert!(out.stderr.contains("sysrq-trigger"), "the write was refused: {out:#?}");
}

#[test]
fn two_ranges_map_each_id_to_its_own_range() {
    let ranges = json!([
        { "containerID": 0, "hostID": BASE, "size": 1000 },
        { "containerID": 1000, "hostID": BASE + 100_000, "size": 1000 },
    ]);
    let bundle = mapped(BusyboxBundle::new(), ranges);
    let vol = volume(&bundle, "vol", None);
    fs::set_permissions(&vol, fs::Permissions::from_mode(0o777)).unwrap();
    let bundle = bundle.mount("/vol", "bind", &vol, &["rbind", "rw"]).user(1500, 1200, &[]).shell("id -u; touch /vol/by-1500");
    let out = bundle.run();
    out.assert_success();
    assert_eq!(out.stdout, "1500\n");
    let made = fs::metadata(Path::new(&vol).join("by-1500")).unwrap();
    assert_eq!((made.uid(), made.gid()), (BASE + 100_500, BASE + 100_200), "uid 1500 and gid 1200 fall in the second range");
}

#[test]
fn exec_joins_the_user_namespace() {
    let bundle = userns_bundle();
    let vol = volume(&bundle, "vol", Some(BASE));
    let bundle = bundle.mount("/vol", "bind", &vol, &["rbind", "rw"]).args(&["sleep", "30"]);
    bundle.create().assert_success();
    bundle.start().assert_success();
    let out = bundle.cli(&["exec", bundle.id(), "sh", "-c", "id -u; touch /vol/from-exec"]);
    out.assert_success();
    assert_eq!(out.stdout, "0\n");
    assert_eq!(fs::metadata(Path::new(&vol).join("from-exec")).unwrap().uid(), BASE);
    bundle.kill("KILL").assert_success();
}

/// An overlay rootfs (what the agent's snapshots are) cannot be idmapped on this kernel: the
/// runtime chowns it through the overlay (the upper dir gets the shifted copies), records the
/// mappings beside it, and a second container with the same mappings uses it as it is.
#[test]
fn an_overlay_rootfs_falls_back_to_a_recorded_chown() {
    let bundle = userns_bundle();
    let layers = bundle.dir().join("layers");
    for d in ["upper", "work", "merged"] {
        fs::create_dir_all(layers.join(d)).unwrap();
    }
    let lower = bundle.rootfs();
    let merged = layers.join("merged");
    let options =
        format!("lowerdir={},upperdir={},workdir={}", lower.display(), layers.join("upper").display(), layers.join("work").display());
    let status = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options]).arg(&merged).status().unwrap();
    assert!(status.success(), "mount the overlay rootfs");
    let mut bundle = bundle.shell("touch /made-by-root && echo ok");
    bundle.config_mut()["root"]["path"] = json!(merged);

    let out = bundle.run();
    out.assert_success();
    assert_eq!(out.stdout, "ok\n");
    let upper_file = fs::metadata(layers.join("upper/made-by-root")).unwrap();
    assert_eq!(upper_file.uid(), BASE, "written by the mapped host id into the upper dir");
    assert_eq!(fs::metadata(layers.join("upper/bin/busybox")).unwrap().uid(), BASE, "the chown copied busybox up, shifted");
    assert_eq!(fs::metadata(lower.join("bin/busybox")).unwrap().uid(), 0, "the shared lower layer is untouched");
    let record: Value = serde_json::from_slice(&fs::read(layers.join(".merged.sched-idshift.json")).unwrap()).unwrap();
    assert_eq!(record["uid"]["ranges"][0]["host_id"], json!(BASE), "{record}");

    let again = bundle.shell("sleep 30");
    again.create().assert_success();
    assert_eq!(rootfs_ids(&again), json!("chowned-before"), "the recorded chown is reused, not repeated");
    again.cli(&["delete", "--force", again.id()]).assert_success();
    let _ = Command::new("umount").arg(&merged).status();
}

#[test]
fn an_idmap_volume_shows_host_files_as_the_containers_own() {
    let bundle = userns_bundle();
    // Owned by host root: without an idmapped mount, container root could not write here.
    let vol = volume(&bundle, "vol", Some(0));
    fs::write(Path::new(&vol).join("host-file"), "x").unwrap();
    let bundle = bundle.mount("/vol", "bind", &vol, &["rbind", "rw", "idmap"]).shell("stat -c %u /vol/host-file; touch /vol/made");
    let out = bundle.run();
    out.assert_success();
    assert_eq!(out.stdout, "0\n", "host uid 0 shows as container uid 0 through the idmapped volume");
    assert_eq!(fs::metadata(Path::new(&vol).join("made")).unwrap().uid(), 0, "stored as container id 0, unshifted");
}

#[test]
fn plain_volume_of_host_root_is_not_writable_by_container_root() {
    let bundle = userns_bundle();
    let vol = volume(&bundle, "vol", Some(0));
    let bundle = bundle.mount("/vol", "bind", &vol, &["rbind", "rw"]).shell("touch /vol/made && echo WROTE; stat -c %u /vol");
    let out = bundle.run();
    assert!(!out.stdout.contains("WROTE"), "container root is not host root: {out:#?}");
    assert!(out.stdout.ends_with("65534\n"), "an unmapped owner shows as nobody: {out:#?}");
}

/// Each hostile mapping fails `create` with one line naming the mapping, and leaves nothing.
#[test]
fn bad_mappings_are_refused_naming_the_mapping() {
    let cases: Vec<(Value, Option<Value>, &str)> = vec![
        (
            json!([{ "containerID": 0, "hostID": BASE, "size": 100 }, { "containerID": 50, "hostID": BASE + 1000, "size": 100 }]),
            None,
            "linux.uidMappings[1] (containerID 50 hostID 301000 size 100) overlaps linux.uidMappings[0] in container ids",
        ),
        (
            json!([{ "containerID": 0, "hostID": BASE, "size": 0 }]),
            None,
            "linux.uidMappings[0] (containerID 0 hostID 300000 size 0): size must be at least 1",
        ),
        (
            json!([{ "containerID": 0, "hostID": 4294967000u32, "size": 65536 }]),
            None,
            "linux.uidMappings[0] (containerID 0 hostID 4294967000 size 65536): the host range runs past the largest id 4294967294",
        ),
        (json!([{ "containerID": 1, "hostID": BASE, "size": 10 }]), None, "process.user.uid 0 is not mapped by linux.uidMappings"),
        (
            json!([{ "containerID": 0, "hostID": BASE, "size": 10 }]),
            Some(json!([])),
            "a new user namespace needs both linux.uidMappings and linux.gidMappings (missing linux.gidMappings)",
        ),
    ];
    for (uid, gid, wanted) in cases {
        let mut bundle = userns_bundle();
        bundle.config_mut()["linux"]["uidMappings"] = uid;
        if let Some(gid) = gid {
            bundle.config_mut()["linux"]["gidMappings"] = gid;
        }
        let out = bundle.create();
        let line = out.assert_one_line_failure();
        assert!(line.contains(wanted), "{line:?} should say {wanted:?}");
        bundle.assert_nothing_left(None);
    }
    let mut no_userns = BusyboxBundle::new();
    no_userns.config_mut()["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": BASE, "size": 10 }]);
    let out = no_userns.create();
    assert!(out.assert_one_line_failure().contains("linux.uidMappings is set but linux.namespaces has no user namespace"), "{out:#?}");
}
