#!/bin/busybox sh
# /init of the cgroup-v2 test VM (tests/tests/cgroup_v2_vm.rs builds the initramfs with
# tests/vm/build-initramfs.sh). It mounts pure cgroup v2, enables cpu, memory and pids for
# children, runs the bundles under /bundles with /usr/bin/sched-runtime, and prints one
# machine-readable line per fact on the serial console:
#   SCHED-VM <key>=<value> ...
# The Rust test parses those lines and asserts; this script only measures.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

report() { echo "SCHED-VM $*"; }
up() { cut -d' ' -f1 /proc/uptime; }

if [ ! -e /.stage2 ]; then
  # pivot_root(2) fails with EINVAL while / is the initramfs (rootfs): copy everything onto a
  # tmpfs and switch_root, so the runtime's pivot_root into a bundle works.
  mkdir /newroot
  mount -t tmpfs -o size=700m tmpfs /newroot
  for d in /*; do
    case $d in /proc|/sys|/dev|/newroot) ;; *) cp -a "$d" /newroot/ ;; esac
  done
  mkdir -p /newroot/proc /newroot/sys /newroot/dev
  touch /newroot/.stage2
  umount /proc /sys /dev
  exec switch_root /newroot /init
fi

report "stage=2 uptime=$(up)"
mount -t cgroup2 cgroup2 /sys/fs/cgroup
report "controllers=$(tr ' ' , < /sys/fs/cgroup/cgroup.controllers)"
echo "+cpu +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
mkdir /sys/fs/cgroup/schedvm
echo "+cpu +memory +pids" > /sys/fs/cgroup/schedvm/cgroup.subtree_control
report "subtree_control=$(tr ' ' , < /sys/fs/cgroup/schedvm/cgroup.subtree_control)"

R="sched-runtime --root /run/sched-runtime"
mkdir -p /run/sched-runtime
CG=/sys/fs/cgroup/schedvm

# Waits up to $2 tenths of a second for `state $1` to report status $3.
wait_status() {
  i=0
  while [ $i -lt "$2" ]; do
    $R state "$1" 2>/dev/null | grep -q "\"status\": *\"$3\"" && return 0
    sleep 0.1; i=$((i + 1))
  done
  return 1
}

# 1. A foreground run over memory.max: the OOM killer kills the container's init -> 137.
a=$(up)
$R run --bundle /bundles/oomrun oomrun < /dev/null > /tmp/oom-run.log 2>&1; rc=$?
report "oom_run_exit=$rc oom_run_seconds=$(awk "BEGIN{print $(up)-$a}")"
report "oom_run_cgroup_left=$([ -d $CG/oomrun ] && echo yes || echo no)"
sed 's/^/SCHED-VM-LOG oom-run: /' /tmp/oom-run.log | tail -3

# 2. The same container through create/start: read its own cgroup files before delete.
$R create --bundle /bundles/oom oom < /dev/null > /tmp/oom.log 2>&1; rc=$?
report "oom_create_exit=$rc"
report "oom_memory_max=$(cat $CG/oom/memory.max 2>/dev/null || echo missing)"
report "oom_swap_max=$(cat $CG/oom/memory.swap.max 2>/dev/null || echo missing)"
report "oom_pids_max=$(cat $CG/oom/pids.max 2>/dev/null || echo missing)"
$R start oom >> /tmp/oom.log 2>&1
wait_status oom 600 stopped; rc=$?
report "oom_stopped=$rc"
report "oom_events=$(tr ' \n' '=,' < $CG/oom/memory.events 2>/dev/null || echo missing)"
$R delete oom >> /tmp/oom.log 2>&1; rc=$?
report "oom_delete_exit=$rc oom_cgroup_left=$([ -d $CG/oom ] && echo yes || echo no)"
sed 's/^/SCHED-VM-LOG oom: /' /tmp/oom.log | tail -3

# 3. A busy loop under cpu.max 20000/100000: usage and throttling over a window.
$R run --bundle /bundles/cpu cpu < /dev/null > /tmp/cpu.log 2>&1 &
RUN=$!
wait_status cpu 600 running; rc=$?
report "cpu_running=$rc"
report "cpu_max=$(tr ' ' / < $CG/cpu/cpu.max 2>/dev/null || echo missing)"
report "cpu_weight=$(cat $CG/cpu/cpu.weight 2>/dev/null || echo missing)"
sleep 1
cp $CG/cpu/cpu.stat /tmp/s1; a=$(up)
sleep 4
cp $CG/cpu/cpu.stat /tmp/s2; b=$(up)
awk -v w="$(awk "BEGIN{print $b-$a}")" 'NR==FNR { s[$1]=$2; next } { d[$1]=$2-s[$1] }
  END { printf "SCHED-VM cpu_window_usec=%d cpu_usage_usec=%d cpu_nr_periods=%d cpu_nr_throttled=%d\n",
        w*1000000, d["usage_usec"], d["nr_periods"], d["nr_throttled"] }' /tmp/s1 /tmp/s2
$R kill cpu KILL
wait $RUN; rc=$?
report "cpu_run_exit=$rc cpu_cgroup_left=$([ -d $CG/cpu ] && echo yes || echo no)"
sed 's/^/SCHED-VM-LOG cpu: /' /tmp/cpu.log | tail -3

# 4. A busy loop under cpu.max 50000/100000 (half a CPU), read twice ~2 s apart as the agent
# samples it: the test computes used/(wall x limit) from these raw cpu.stat files, ~1.0.
$R run --bundle /bundles/cpuhalf cpuhalf < /dev/null > /tmp/cpuhalf.log 2>&1 &
RUN=$!
wait_status cpuhalf 600 running; rc=$?
report "half_running=$rc half_cpu_max=$(tr ' ' / < $CG/cpuhalf/cpu.max 2>/dev/null || echo missing)"
sleep 1
a=$(up); s1=$(tr ' \n' ':,' < $CG/cpuhalf/cpu.stat 2>/dev/null || echo missing)
sleep 2
b=$(up); s2=$(tr ' \n' ':,' < $CG/cpuhalf/cpu.stat 2>/dev/null || echo missing)
report "half_t1=$a half_stat1=$s1"
report "half_t2=$b half_stat2=$s2"
$R kill cpuhalf KILL
wait $RUN; rc=$?
report "half_run_exit=$rc half_cgroup_left=$([ -d $CG/cpuhalf ] && echo yes || echo no)"
sed 's/^/SCHED-VM-LOG cpuhalf: /' /tmp/cpuhalf.log | tail -3

# 5. A block device node planted in the rootfs (brd's /dev/ram0, b 1:0, mode 0666), a spec
# without device rules (as the agent writes them): the runtime's eBPF device program refuses it.
insmod /lib/modules/brd.ko rd_nr=1 rd_size=1024
printf SECRET > /dev/ram0
report "devnode_ram0=$(head -c 6 /dev/ram0 2>/dev/null || echo missing)"
$R run --bundle /bundles/devnode devnode < /dev/null > /tmp/devnode.log 2>&1; rc=$?
report "devnode_exit=$rc devnode_null=$(grep -c null-ok /tmp/devnode.log) devnode_read=$(grep -c SECRET /tmp/devnode.log)"
report "devnode_refused=$(grep -c 'Operation not permitted' /tmp/devnode.log)"
sed 's/^/SCHED-VM-LOG devnode: /' /tmp/devnode.log | tail -3

# 6. delete --force of a container without a pid namespace whose init left a background child,
# that child moved into a cgroup below the container's: delete kills it by the cgroup
# (cgroup.kill on this kernel) and removes both cgroups.
$R create --bundle /bundles/orphans orphans < /dev/null > /tmp/orphans.log 2>&1
$R start orphans >> /tmp/orphans.log 2>&1
i=0
while [ ! -s /bundles/orphans/rootfs/tmp/child.pid ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
child=$(cat /bundles/orphans/rootfs/tmp/child.pid 2>/dev/null)
mkdir $CG/orphans/nested && echo "$child" > $CG/orphans/nested/cgroup.procs
report "orphans_cgroup_kill=$([ -e $CG/orphans/cgroup.kill ] && echo yes || echo no)"
report "orphans_nested=$(grep -qx "$child" $CG/orphans/nested/cgroup.procs 2>/dev/null && echo yes || echo no)"
$R delete --force orphans >> /tmp/orphans.log 2>&1; rc=$?
alive=no
[ -n "$child" ] && [ -e /proc/$child/stat ] && ! grep -q ') Z' /proc/$child/stat && alive=yes
report "orphans_delete_exit=$rc orphans_child_alive=$alive orphans_cgroup_left=$([ -d $CG/orphans ] && echo yes || echo no)"
sed 's/^/SCHED-VM-LOG orphans: /' /tmp/orphans.log | tail -3

# 7. A container in a user namespace (as the agent runs tasks): root is the mapped host id, the
# cgroup v2 limits apply as without one, and what it writes is owned by the mapped id.
$R create --bundle /bundles/userns userns < /dev/null > /tmp/userns.log 2>&1; rc=$?
$R start userns >> /tmp/userns.log 2>&1
wait_status userns 600 running; running=$?
pid=$($R state userns 2>/dev/null | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' | head -1)
i=0
while [ ! -e /bundles/userns/rootfs/made-by-root ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
report "userns_create_exit=$rc userns_running=$running userns_uid=$(awk '/^Uid:/ {print $2}' /proc/$pid/status 2>/dev/null || echo missing)"
report "userns_map=$(tr -s ' ' < /proc/$pid/uid_map 2>/dev/null | sed 's/^ //' | tr ' ' :)"
report "userns_file_uid=$(stat -c %u /bundles/userns/rootfs/made-by-root 2>/dev/null || echo missing)"
report "userns_memory_max=$(cat $CG/userns/memory.max 2>/dev/null || echo missing)"
$R delete --force userns >> /tmp/userns.log 2>&1; rc=$?
report "userns_delete_exit=$rc userns_cgroup_left=$([ -d $CG/userns ] && echo yes || echo no)"
sed 's/^/SCHED-VM-LOG userns: /' /tmp/userns.log | tail -3

report "done=yes uptime=$(up)"
poweroff -f
