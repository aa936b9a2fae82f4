#!/usr/bin/env bash
# Installs what the benchmark programs (bench/src/bin/) need to measure sched beside its peers:
# everything the tests need (scripts/install-test-deps.sh: runc, podman, skopeo, umoci, the
# registry), and the peers only the benchmarks run: etcd (raft-commit), nginx and wrk (ingress).
# Idempotent, quiet when done. Run as root on Debian.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/install-test-deps.sh" etcd-server wrk nginx-light
# The benchmarks start their own etcd members and nginx on loopback ports of their own; a
# packaged service started by the install (where an init system runs one) would only share the
# machine's CPU with them.
if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
  systemctl disable --now etcd nginx >/dev/null 2>&1 || true
fi
