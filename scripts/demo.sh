#!/usr/bin/env bash
# The demo (the README's first command): a real service on this machine, start to finish.
#
# Installs what it needs (apt), builds sched (release), starts a registry on loopback, builds
# and pushes the quotes image (scripts/build-quotes-image.sh), starts `sched dev` (a one-server
# cluster, an agent and the ingress in one process), applies examples/quotes/service.toml, waits
# until both tasks run, asks each for a quote, then asks the ingress (one address for every
# task) for a few more. On exit, also on failure or Ctrl-C, it deletes the
# service and stops and removes everything it started.
#
# Environment:
#   KEEP=1              leave everything running and print how to stop it
#   SCHED_BIN_DIR=DIR   use already built binaries (sched, sched-runtime), e.g. target/debug
#   REGISTRY_PORT=5000  the registry's port on 127.0.0.1
#   SCHED_LISTEN=127.0.0.1:7700   the API address of sched dev
#   SCHED_INGRESS=127.0.0.1:8080  where sched dev's ingress listens
#   CGROUP_PARENT=/sched-demo     the cgroup the tasks' cgroups are made under
#   SCHED_ADMIN_CREDENTIALS=/etc/sched/admin.toml  where sched dev writes the admin's
#                       credentials (the default is where `sched` looks without flags)
#   WAIT_SECS=120       how long to wait for the tasks to run
#
#   scripts/demo.sh stop DIR   stops what a KEEP=1 run left running (it prints this command)
#
# Run as root on Debian. The container isolation demo that used to be here is
# scripts/runtime-demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() { echo "scripts/demo.sh: $*" >&2; exit 1; }
port_taken() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# ---- cleanup: everything a run started is recorded under its work dir, so `stop DIR` and the
# exit trap share this code.
stop_all() {
  local work=$1 sched_bin listen admin dev_pid registry_pid
  [ -d "$work" ] || return 0
  sched_bin=$(cat "$work/sched-bin" 2>/dev/null || true)
  listen=$(cat "$work/listen" 2>/dev/null || true)
  admin=$(cat "$work/admin-credentials" 2>/dev/null || true)
  dev_pid=$(cat "$work/sched-dev.pid" 2>/dev/null || true)
  registry_pid=$(cat "$work/registry.pid" 2>/dev/null || true)
  echo "cleaning up: the quotes service, sched dev, the registry, $work"
  if [ -n "$dev_pid" ] && kill -0 "$dev_pid" 2>/dev/null; then
    # Delete the service and wait until the agent has stopped and removed its containers
    # (httpd is pid 1 and ignores SIGTERM, so each takes the agent's 10 s stop grace).
    if "$sched_bin" --server "$listen" --config "$admin" delete quotes >/dev/null 2>&1; then
      for _ in $(seq 1 150); do
        [ -z "$(containers "$work")" ] && break
        sleep 0.2
      done
      # Each container's network namespace goes right after it: give the agent that moment.
      for _ in $(seq 1 50); do
        [ -z "$(netns_pins)" ] && break
        sleep 0.1
      done
    fi
    kill -TERM "$dev_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$dev_pid" 2>/dev/null || true
  fi
  # Whatever is left (sched dev died before it could stop its tasks): remove it directly.
  for id in $(containers "$work"); do
    "$(dirname "$sched_bin")/sched-runtime" --root "$work/sched/agent/runtime" delete --force "$id" >/dev/null 2>&1 || true
  done
  # And the task network namespaces it had no time to remove.
  for pin in $(netns_pins); do
    umount -l "$pin" 2>/dev/null || true
    rm -f "$pin"
  done
  if [ -n "$registry_pid" ]; then
    kill -TERM "$registry_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$registry_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$registry_pid" 2>/dev/null || true
  fi
  # The node network sched dev made, if this run made it (docs/networking.md, "Cleaning up").
  if [ -f "$work/made-bridge" ]; then ip link del sched0 2>/dev/null || true; fi
  if [ -f "$work/made-nft-table" ]; then nft delete table ip sched 2>/dev/null || true; fi
  if [ -f "$work/made-netns-dir" ]; then umount /run/sched/netns 2>/dev/null || true; rmdir /run/sched/netns 2>/dev/null || true; fi
  if [ -f "$work/made-run-dir" ]; then rmdir /run/sched 2>/dev/null || true; fi
  # The admin credentials sched dev wrote, if none were there before (they name a cluster
  # that is gone now).
  if [ -f "$work/made-admin-credentials" ] && [ -n "$admin" ]; then rm -f "$admin"; fi
  # Credentials of another cluster that were there before: put back.
  if [ -f "$work/admin-credentials.before" ] && [ -n "$admin" ]; then cp -p "$work/admin-credentials.before" "$admin"; fi
  if [ -f "$work/cgroup-parent" ]; then
    local parent
    parent=$(cat "$work/cgroup-parent")
    # At each hierarchy root: the v1 controllers and the unified dir, or a pure v2 root.
    for dir in /sys/fs/cgroup/*"$parent" "/sys/fs/cgroup$parent"; do
      [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
  fi
  # Task root filesystems are mounts under the work dir.
  awk -v w="$work" '$2 == w || index($2, w "/") == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf "$work"
}

# The ids of the containers the demo's agent knows.
# The pinned network namespaces of the quotes tasks (sched dev's default netns dir).
netns_pins() {
  ls -d /run/sched/netns/quotes-* 2>/dev/null || true
}

containers() {
  local work=$1 runtime
  runtime="$(dirname "$(cat "$work/sched-bin" 2>/dev/null || echo /nonexistent/x)")/sched-runtime"
  [ -x "$runtime" ] && [ -d "$work/sched/agent/runtime" ] || return 0
  "$runtime" --root "$work/sched/agent/runtime" list -q 2>/dev/null || true
}

if [ "${1:-}" = stop ]; then
  [ -n "${2:-}" ] || fail "usage: scripts/demo.sh stop DIR (the dir a KEEP=1 run printed)"
  stop_all "$2"
  exit 0
fi

[ "$(id -u)" = 0 ] || fail "tasks are containers and need root; run it as root (sudo scripts/demo.sh)"
registry_port=${REGISTRY_PORT:-5000}
listen=${SCHED_LISTEN:-127.0.0.1:7700}
ingress=${SCHED_INGRESS:-127.0.0.1:8080}
cgroup_parent=${CGROUP_PARENT:-/sched-demo}
admin=${SCHED_ADMIN_CREDENTIALS:-/etc/sched/admin.toml}
wait_secs=${WAIT_SECS:-120}

# ---- 1. packages
# gcc make pkg-config zlib1g-dev libelf-dev: building sched-runtime (libbpf-sys compiles libbpf).
pkgs=(gcc make pkg-config zlib1g-dev libelf-dev docker-registry umoci skopeo busybox-static curl jq nftables iproute2)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- 2. binaries
if [ -n "${SCHED_BIN_DIR:-}" ]; then
  bin=$(cd "$SCHED_BIN_DIR" && pwd)
else
  say "building sched and sched-runtime (release; a few minutes the first time)"
  cargo build --quiet --release -p sched -p runtime --bins
  bin=$repo/target/release
fi
for b in sched sched-runtime; do [ -x "$bin/$b" ] || fail "$bin/$b is missing: build it, or unset SCHED_BIN_DIR"; done

port_taken 127.0.0.1 "$registry_port" && fail "127.0.0.1:$registry_port is taken: stop what listens there or set REGISTRY_PORT"
port_taken "${listen%:*}" "${listen##*:}" && fail "$listen is taken (another sched dev or sched server?): stop it or set SCHED_LISTEN"
port_taken "${ingress%:*}" "${ingress##*:}" && fail "$ingress is taken (another sched dev, or a web server?): stop it or set SCHED_INGRESS"

work=$(mktemp -d "${TMPDIR:-/tmp}/sched-demo.XXXXXX")
echo "$bin/sched" > "$work/sched-bin"
echo "$listen" > "$work/listen"
echo "$admin" > "$work/admin-credentials"
echo "$cgroup_parent" > "$work/cgroup-parent"
ip link show sched0 >/dev/null 2>&1 || touch "$work/made-bridge"
nft list table ip sched >/dev/null 2>&1 || touch "$work/made-nft-table"
[ -e /run/sched/netns ] || touch "$work/made-netns-dir"
[ -e /run/sched ] || touch "$work/made-run-dir"
if [ -e "$admin" ]; then cp -p "$admin" "$work/admin-credentials.before"; else touch "$work/made-admin-credentials"; fi
finish() {
  local status=$?
  trap - EXIT INT TERM
  if [ "${KEEP:-0}" = 1 ]; then
    echo
    echo "KEEP=1: everything is still running (logs in $work). Stop it all with:"
    echo "  scripts/demo.sh stop $work"
  else
    stop_all "$work"
  fi
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sched() { "$bin/sched" --server "$listen" --config "$admin" "$@"; }
log_tail() { echo "--- last lines of $1:"; tail -n "${2:-30}" "$1" 2>/dev/null | sed 's/^/    /'; }

# ---- 3. registry
say "starting a registry on 127.0.0.1:$registry_port (storage in $work/registry)"
mkdir -p "$work/registry"
cat > "$work/registry/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $work/registry/data}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$registry_port
  secret: sched-demo-$$
EOF
setsid docker-registry serve "$work/registry/config.yml" > "$work/registry.log" 2>&1 &
echo $! > "$work/registry.pid"
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$registry_port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$registry_port/v2/" >/dev/null 2>&1 || { log_tail "$work/registry.log"; fail "the registry did not come up"; }

# ---- 4. the image
image=127.0.0.1:$registry_port/quotes:1.0
say "building the quotes image (busybox httpd + a CGI script) and pushing $image"
scripts/build-quotes-image.sh "$image"
service_file=examples/quotes/service.toml
if [ "$registry_port" != 5000 ]; then
  sed "s|127.0.0.1:5000/quotes:1.0|$image|" examples/quotes/service.toml > "$work/service.toml"
  service_file=$work/service.toml
fi

# ---- 5. sched dev
say "starting sched dev on $listen (data in $work/sched, log in $work/sched-dev.log)"
setsid "$bin/sched" dev --data-dir "$work/sched" --listen "$listen" --ingress-listen "$ingress" --cgroup-parent "$cgroup_parent" \
  --admin-credentials "$admin" > "$work/sched-dev.log" 2>&1 &
echo $! > "$work/sched-dev.pid"
deadline=$((SECONDS + 30))
until [ "$(sched get nodes -o json 2>/dev/null | jq '[.[] | select(.status == "ready")] | length' 2>/dev/null)" = 1 ]; do
  kill -0 "$(cat "$work/sched-dev.pid")" 2>/dev/null || { log_tail "$work/sched-dev.log"; fail "sched dev exited"; }
  [ $SECONDS -lt $deadline ] || { log_tail "$work/sched-dev.log"; fail "the node did not register with the server within 30 s"; }
  sleep 0.2
done
grep -m 1 '^sched dev:' "$work/sched-dev.log" | sed 's/^/    /'

# ---- 6. the service
say "sched apply $service_file"
sched apply "$service_file"
say "waiting for both tasks to run (up to $wait_secs s)"
deadline=$((SECONDS + wait_secs))
ready='length > 0 and all(.[]; .observed_state == "running" and (.endpoints | length) > 0)'
until tasks=$(sched get tasks --service quotes -o json 2>/dev/null) \
  && [ "$(jq length <<<"$tasks")" = "$(sched get services -o json | jq '.[] | select(.name == "quotes") | .desired_count')" ] \
  && [ "$(jq "$ready" <<<"$tasks")" = true ]; do
  kill -0 "$(cat "$work/sched-dev.pid")" 2>/dev/null || { log_tail "$work/sched-dev.log"; fail "sched dev exited"; }
  if [ $SECONDS -ge $deadline ]; then
    sched get tasks || true
    log_tail "$work/sched-dev.log" 40
    fail "the tasks did not all run within $wait_secs s (WAIT_SECS sets the limit)"
  fi
  sleep 0.5
done
sched get tasks

# ---- 7. ask each task
say "asking each task for a quote"
for endpoint in $(jq -r '.[].endpoints[]' <<<"$tasks"); do
  quote=$(curl -fsS --max-time 5 "http://$endpoint/") || fail "no answer from http://$endpoint/"
  printf '  %-22s %s\n' "$endpoint" "$quote"
done

# ---- 8. the ingress: one address, requests spread over the healthy tasks
say "waiting until the ingress has both tasks as healthy targets (their health check passes)"
deadline=$((SECONDS + wait_secs))
until [ "$(sched get routes -o json 2>/dev/null | jq '[.[] | select(.service == "quotes") | .targets[] | select(.healthy)] | length' 2>/dev/null)" = 2 ]; do
  [ $SECONDS -lt $deadline ] || { sched get routes || true; fail "the tasks did not become healthy targets within $wait_secs s"; }
  sleep 0.5
done
sched get routes
say "asking the ingress at http://$ingress/ for quotes"
for _ in 1 2 3 4; do
  quote=$(curl -fsS --max-time 5 "http://$ingress/") || fail "no answer from the ingress at http://$ingress/"
  printf '  %-22s %s\n' "ingress" "$quote"
done

echo
echo "Look around (while it runs, e.g. with KEEP=1):"
client="$bin/sched --server $listen"
[ "$admin" = /etc/sched/admin.toml ] || client="$client --config $admin"
echo "  $client get tasks"
echo "  $client describe service quotes"
echo "  $client get routes"
echo "  curl http://$ingress/"
