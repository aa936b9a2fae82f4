#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks need (idempotent, quiet when done).
set -euo pipefail
# gcc make pkg-config zlib1g-dev libelf-dev: libbpf-sys builds libbpf (the cgroup v2 device program);
# gcc libc6-dev also build the static syscall probe of the seccomp tests.
PKGS=(gcc make pkg-config zlib1g-dev libelf-dev libc6-dev busybox-static iproute2 nftables containernetworking-plugins iptables runc qemu-system-x86 linux-image-amd64 cpio kmod binutils docker-registry skopeo umoci apache2-utils podman curl jq)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
