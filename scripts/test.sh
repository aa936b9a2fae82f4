#!/usr/bin/env bash
# Runs every test of sched. Run as root on Debian: it installs what the tests need through apt.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: the tests start real containers and must run as root" >&2
  exit 1
fi
bash scripts/install-test-deps.sh
# The lint gates: the code as rustfmt.toml formats it, and no clippy warning.
for tool in fmt clippy; do
  cargo "$tool" --version >/dev/null 2>&1 || { echo "scripts/test.sh: cargo $tool is missing: rustup component add ${tool/fmt/rustfmt}" >&2; exit 1; }
done
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
# The Vagrant lab's VMs (tests/tests/vagrant_lab.rs) run release binaries: emulated guests are
# too slow for debug ones.
cargo build --release -p sched -p agent -p runtime --bins
cargo test --workspace
