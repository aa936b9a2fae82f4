#!/bin/sh
# Installs sched on a lab VM (run by Vagrant as root at `vagrant up` and `vagrant provision`):
# the binaries and units synced into /opt/sched-lab, this node's settings, then starts the
# server and, without waiting for it, the agent. The lab's servers mark a node down after 8 s
# without heartbeats (the default is 10 s), so that a lost VM's tasks move within seconds.
#
#   provision.sh NAME ID IP INITIAL_CLUSTER SERVERS REGISTRY
set -eu
name=$1 id=$2 ip=$3 initial=$4 servers=$5 registry=$6
src=/opt/sched-lab
for f in bin/sched bin/sched-agent bin/sched-runtime ca/ca.pem ca/ca-key.pem systemd/sched-server.service systemd/sched-agent.service; do
  [ -e "$src/$f" ] || { echo "provision: $src/$f is missing: bring the lab up with vagrant/lab up" >&2; exit 1; }
done
# Pure cgroup v2 with the controllers the tasks' limits need.
[ -e /sys/fs/cgroup/cgroup.controllers ] || { echo "provision: /sys/fs/cgroup is not cgroup v2" >&2; exit 1; }
install -m 0755 "$src/bin/sched" "$src/bin/sched-agent" "$src/bin/sched-runtime" /usr/local/bin/
install -d -m 0700 /etc/sched /etc/sched/ca
install -m 0644 "$src/ca/ca.pem" /etc/sched/ca/ca.pem
install -m 0600 "$src/ca/ca-key.pem" /etc/sched/ca/ca-key.pem
cat > /etc/sched/server.env <<E
SCHED_SERVER_ARGS="--id $id --listen $ip:7701 --initial-cluster $initial --ca-dir /etc/sched/ca --insecure-registry $registry --node-timeout-ms 8000"
E
cat > /etc/sched/agent.env <<E
SCHED_SERVER=$servers
SCHED_AGENT_ARGS="--name $name --address $ip --ingress-listen $ip:8080 --insecure-registry $registry"
E
install -m 0644 "$src/systemd/sched-server.service" "$src/systemd/sched-agent.service" /etc/systemd/system/
install -d /etc/systemd/system/sched-agent.service.d /usr/local/lib/sched-lab
install -m 0644 "$src/systemd/lab-join.conf" /etc/systemd/system/sched-agent.service.d/lab-join.conf
cat > /usr/local/lib/sched-lab/agent-token <<'E'
#!/bin/sh
# ExecStartPre of the lab's agent (lab-join.conf): a join token from the servers on the first
# start, once they have a quorum; nothing once the agent holds its certificate.
[ -e /var/lib/sched/agent/pki/cert.pem ] && exit 0
install -d -m 0700 /run/sched-lab
until token=$(/usr/local/bin/sched --config /etc/sched/admin.toml token create --role agent --ttl 1h 2>/dev/null); do
  sleep 1
done
printf 'SCHED_JOIN_TOKEN=%s\n' "$token" > /run/sched-lab/agent-token.env
E
chmod 0755 /usr/local/lib/sched-lab/agent-token
systemctl daemon-reload
systemctl enable sched-server sched-agent >/dev/null 2>&1
# restart: a second provision picks up new binaries.
systemctl restart sched-server
systemctl restart --no-block sched-agent
echo "provision: $name runs sched server (id $id, $ip:7701) and sched-agent (ingress on $ip:8080)"
