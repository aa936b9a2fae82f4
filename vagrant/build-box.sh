#!/usr/bin/env bash
# Builds a Vagrant box for the lab without downloading a box: Debian bookworm with
# debootstrap from the Debian mirror apt already uses, for the libvirt provider.
#
#   vagrant/build-box.sh [OUT.box]     default /var/cache/sched-vagrant/sched-bookworm-v1.box
#
# Then `vagrant box add --name sched/bookworm OUT.box` and `SCHED_LAB_BOX=sched/bookworm
# vagrant/lab up` (vagrant/README.md). The box is a minimal Debian (systemd, sshd, sudo,
# ifupdown with DHCP on eth0, nftables for the agent's published ports, libelf for
# sched-runtime's device filter), the user vagrant with Vagrant's insecure key, one ext4 disk
# (qcow2) and the kernel and initrd outside it: the box's own Vagrantfile boots them directly,
# so no boot loader is installed. Pure cgroup v2 (Debian 12's default). Needs root and the
# packages debootstrap, qemu-utils, e2fsprogs and vagrant (for its public key). About 2 minutes;
# the .box is ~250 MB (an uncompressed tar: the qcow2 image is already compressed).
set -euo pipefail
out=${1:-/var/cache/sched-vagrant/sched-bookworm-v1.box}
[ "$(id -u)" = 0 ] || { echo "$0: debootstrap needs root" >&2; exit 1; }
for tool in debootstrap qemu-img mkfs.ext4 tar; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is missing: apt-get install debootstrap qemu-utils e2fsprogs" >&2; exit 1; }
done
key=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -1 || true)
[ -n "$key" ] || { echo "$0: Vagrant's insecure public key (keys/vagrant.pub) is missing: apt-get install vagrant" >&2; exit 1; }
# The mirror apt uses (deb822 sources or the classic list), else Debian's CDN.
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d "${TMPDIR:-/tmp}/sched-box.XXXXXX")
rootfs=$work/rootfs
box=$work/box
cleanup() {
  for m in proc sys dev/pts dev; do mountpoint -q "$rootfs/$m" 2>/dev/null && umount -l "$rootfs/$m"; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "building the box from $mirror in $work"
debootstrap --variant=minbase \
  --include=linux-image-amd64,initramfs-tools,systemd-sysv,openssh-server,sudo,ifupdown,isc-dhcp-client,iproute2,iputils-ping,rsync,procps,nftables,libelf1,curl,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }

r=$rootfs
echo vagrant-box > $r/etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 vagrant-box\n' > $r/etc/hosts
printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' > $r/etc/fstab
cat > $r/etc/network/interfaces <<'N'
auto lo
iface lo inet loopback
allow-hotplug eth0
iface eth0 inet dhcp
N
chroot $r useradd -m -s /bin/bash -G sudo vagrant
echo 'vagrant:vagrant' | chroot $r chpasswd
echo 'root:vagrant' | chroot $r chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' > $r/etc/sudoers.d/vagrant
chmod 440 $r/etc/sudoers.d/vagrant
install -d -m700 -o 1000 -g 1000 $r/home/vagrant/.ssh
install -m600 -o 1000 -g 1000 "$key" $r/home/vagrant/.ssh/authorized_keys
echo 'UseDNS no' > $r/etc/ssh/sshd_config.d/vagrant.conf
# A login on the serial console (the lab writes it to NODE-console.log), and no timers that
# compete with the lab for the guest's CPU.
ln -sf /lib/systemd/system/serial-getty@.service $r/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service
chroot $r systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer >/dev/null 2>&1 || true
rm -rf $r/var/cache/apt/archives/*.deb $r/var/lib/apt/lists/* $r/usr/share/doc/* $r/usr/share/man/* $r/usr/share/locale/*

mkdir -p "$box"
kver=$(ls $r/boot | sed -n 's/^vmlinuz-//p' | head -1)
cp "$r/boot/vmlinuz-$kver" "$box/vmlinuz"
cp "$r/boot/initrd.img-$kver" "$box/initrd.img"
size_g=8
truncate -s ${size_g}G "$box/root.raw"
# mkfs.ext4 -d fills the file system from the directory: no loop device needed.
mkfs.ext4 -q -F -L root -d "$r" "$box/root.raw"
qemu-img convert -O qcow2 -c "$box/root.raw" "$box/box.img"
rm "$box/root.raw"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %s}\n' "$size_g" > "$box/metadata.json"
cat > "$box/Vagrantfile" <<'V'
# Direct kernel boot: the kernel and initrd ship beside the disk image.
Vagrant.configure("2") do |config|
  boxdir = File.dirname(__FILE__)
  config.vm.provider :libvirt do |lv|
    lv.kernel = File.join(boxdir, "vmlinuz")
    lv.initrd = File.join(boxdir, "initrd.img")
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0 biosdevname=0 quiet"
    lv.disk_bus = "virtio"
  end
end
V
mkdir -p "$(dirname "$out")"
tar -C "$box" -cf "$out.partial" metadata.json Vagrantfile box.img vmlinuz initrd.img
mv "$out.partial" "$out"
echo "built $out ($(du -h "$out" | cut -f1))"
