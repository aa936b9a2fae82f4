#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks need (idempotent, quiet when done).
# Package names given as arguments are installed too (scripts/install-bench-deps.sh).
set -euo pipefail
# gcc make pkg-config zlib1g-dev libelf-dev: libbpf-sys builds libbpf (the cgroup v2 device program);
# gcc libc6-dev also build the static syscall probe of the seccomp tests.
# vagrant ... qemu-utils: the Vagrant lab's test (tests/tests/vagrant_lab.rs) runs vagrant with
# vagrant-libvirt against a libvirtd of its own and builds the box with debootstrap.
PKGS=(util-linux gcc make pkg-config zlib1g-dev libelf-dev libc6-dev busybox-static iproute2 nftables containernetworking-plugins iptables runc qemu-system-x86 linux-image-amd64 cpio kmod binutils docker-registry skopeo umoci apache2-utils podman curl jq python3-venv
  vagrant vagrant-libvirt libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients dnsmasq-base ebtables debootstrap qemu-utils e2fsprogs rsync openssh-client)
PKGS+=("$@")
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
# qemu-system-x86 must come from the release the machine's qemu-utils came from: an image that
# carries qemu-utils from bookworm-backports (these machines' does) cannot take bookworm's
# qemu-system (qemu-utils >= 8 Breaks qemu-system-common < 8), so it gets backports' too.
if ! installed qemu-system-x86 && installed qemu-utils && [[ $(dpkg-query -W -f='${Version}' qemu-utils) == *bpo* ]]; then
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  echo "installing qemu-system-x86 from ${codename}-backports, beside the machine's qemu-utils from there"
  list=/etc/apt/sources.list.d/sched-tests-backports.list
  [ -f "$list" ] || echo "deb http://deb.debian.org/debian ${codename}-backports main" > "$list"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends -t "${codename}-backports" qemu-system-x86 >/dev/null
fi
missing=()
for p in "${PKGS[@]}"; do
  installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# A third-party gRPC client for the reflection test (tests/python/reflection_list.py): Python's
# grpcio-reflection speaks only reflection v1alpha. From PyPI, pinned, in a venv of its own.
PYTHON_ENV=/var/lib/sched-tests/python
if ! "$PYTHON_ENV/bin/python" -c 'import grpc_reflection.v1alpha.reflection_pb2_grpc' 2>/dev/null; then
  echo "installing grpcio and grpcio-reflection into $PYTHON_ENV"
  /usr/bin/python3 -m venv "$PYTHON_ENV"
  "$PYTHON_ENV/bin/pip" install --quiet --disable-pip-version-check grpcio==1.68.1 grpcio-reflection==1.68.1
fi
