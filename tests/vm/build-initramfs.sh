#!/usr/bin/env bash
# Builds the initramfs of the cgroup-v2 test VM (used by tests/tests/cgroup_v2_vm.rs).
#   build-initramfs.sh OUT_DIR RUNTIME_BINARY BUNDLES_DIR [MODULE.ko...]
# OUT_DIR/initramfs.gz then holds: busybox-static, the runtime binary (without debug info) as
# /usr/bin/sched-runtime with the shared libraries `ldd` lists for it, BUNDLES_DIR copied to
# /bundles, the kernel modules given (in /lib/modules/, for init.sh to insmod), and
# tests/vm/init.sh as /init. Needs cpio, gzip, strip (binutils).
set -euo pipefail
out=$1 runtime=$2 bundles=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
root=$out/initrd-root
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,etc}

busybox=$(command -v busybox)
cp "$busybox" "$root/bin/busybox"
# Debug info is most of a debug build's size (140 MB -> ~15 MB): keep it out of the VM.
strip --strip-debug -o "$root/usr/bin/sched-runtime" "$runtime"
# A statically linked binary makes ldd print "not a dynamic executable" and exit 1.
for lib in $(ldd "$runtime" 2>/dev/null | grep -o '/[^ ]*' || true); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp -a "$bundles" "$root/bundles"
mkdir -p "$root/lib/modules"
for module in "$@"; do
  cp "$module" "$root/lib/modules/"
done
cp "$here/init.sh" "$root/init"
chmod +x "$root/init"

(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 > "$out/initramfs.gz")
rm -rf "$root"
