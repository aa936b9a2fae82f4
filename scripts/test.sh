#!/usr/bin/env bash
# Runs every test of sched. Run as root on Debian: it installs what the tests need through apt.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: the tests start real containers and must run as root" >&2
  exit 1
fi
bash scripts/install-test-deps.sh
cargo build --workspace --bins
cargo test --workspace
