#!/usr/bin/env bash
# The runtime isolation demo: builds sched-runtime, makes a busybox-static bundle and runs a
# container that prints what isolates it (namespaces, read-only root, capabilities, masked /proc
# paths, cgroup limits). Run as root on Debian. The README's demo of the whole product is
# scripts/demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/runtime-demo.sh: containers need root; run it as root (sudo scripts/runtime-demo.sh)" >&2
  exit 1
fi
# busybox-static: the demo container's userland; the rest builds sched-runtime (libbpf-sys
# compiles libbpf for the cgroup v2 device program).
missing=()
for p in busybox-static gcc make pkg-config zlib1g-dev libelf-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "building sched-runtime (release)..."
cargo build --quiet --release -p runtime --bin sched-runtime
runtime="$PWD/target/release/sched-runtime"

work=$(mktemp -d /tmp/sched-demo.XXXXXX)
id="demo-$$"
cleanup() {
  "$runtime" --root "$work/state" delete --force "$id" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/etc"
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -sf busybox "$work/bundle/rootfs/bin/$applet"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$work/bundle/rootfs/etc/passwd"
echo 'root:x:0:' > "$work/bundle/rootfs/etc/group"
cat > "$work/bundle/rootfs/bin/show-isolation" <<'SCRIPT'
#!/bin/sh
echo "== inside the container =="
echo "my pid:            $$ (pid 1: a pid namespace of its own)"
echo "hostname:          $(hostname) (a uts namespace of its own)"
echo "processes I see:   $(ps -o pid= | wc -l) ($(ps -o comm= | tr '\n' ' '))"
echo "network devices:   $(ls /sys/class/net | tr '\n' ' ')(a network namespace of its own)"
if touch /probe 2>/dev/null; then echo "root filesystem:   writable"; else echo "root filesystem:   read-only"; fi
echo "capabilities:      $(grep CapEff /proc/self/status | cut -f2) (effective set, from the spec)"
if cat /proc/kcore >/dev/null 2>&1 && [ -s /proc/kcore ]; then echo "/proc/kcore:       readable"; else echo "/proc/kcore:       masked"; fi
if [ -f /sys/fs/cgroup/memory.max ]; then
  echo "memory limit:      $(cat /sys/fs/cgroup/memory.max) bytes (cgroup v2)"
  echo "cpu quota:         $(cat /sys/fs/cgroup/cpu.max) (quota period, cgroup v2)"
  echo "pids limit:        $(cat /sys/fs/cgroup/pids.max)"
else
  echo "memory limit:      $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) bytes (cgroup v1)"
  echo "cpu quota:         $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)/$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us) us (cgroup v1)"
  echo "pids limit:        $(cat /sys/fs/cgroup/pids/pids.max)"
fi
echo "mounts:"
grep -v '^cgroup ' /proc/mounts | awk '{printf "  %-16s %-8s %s\n", $2, $3, $4}'
SCRIPT
chmod +x "$work/bundle/rootfs/bin/show-isolation"
cat > "$work/bundle/config.json" <<JSON
{
  "ociVersion": "1.2.0",
  "process": {
    "terminal": false,
    "user": { "uid": 0, "gid": 0 },
    "args": ["/bin/show-isolation"],
    "env": ["PATH=/bin", "TERM=xterm"],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"],
      "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"],
      "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"]
    },
    "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
    "noNewPrivileges": true
  },
  "root": { "path": "rootfs", "readonly": true },
  "hostname": "sched-demo",
  "mounts": [
    { "destination": "/proc", "type": "proc", "source": "proc" },
    { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
    { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
    { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
    { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] },
    { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=16m"] }
  ],
  "linux": {
    "cgroupsPath": "/sched-demo-$$",
    "resources": {
      "memory": { "limit": 67108864 },
      "cpu": { "quota": 50000, "period": 100000 },
      "pids": { "limit": 64 }
    },
    "namespaces": [
      { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
      { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
    ],
    "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
    "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
  }
}
JSON
echo "running: sched-runtime run --bundle $work/bundle $id"
start=$(date +%s%N)
"$runtime" --root "$work/state" run --bundle "$work/bundle" "$id"
end=$(date +%s%N)
echo "== back on the host =="
echo "create + start + run + delete took $(( (end - start) / 1000000 )) ms; nothing of the container is left:"
echo "  containers: $("$runtime" --root "$work/state" list -q | wc -l), cgroup dirs: $(ls -d /sys/fs/cgroup/*/sched-demo-$$ /sys/fs/cgroup/sched-demo-$$ 2>/dev/null | wc -l)"
