#!/usr/bin/env bash
# Start a one-node SLURM on this machine for the tests (no systemd): installs slurm-wlm and munge from
# Debian packages when missing, writes slurm.conf, starts munged, slurmctld and slurmd in the background,
# records their PIDs in $STATE/pids and waits until sinfo shows the node idle.
# Usage: tests/slurm/start-local-slurm.sh STATE_DIR      (stop with tests/slurm/stop-local-slurm.sh STATE_DIR)
# Refuses (exit 3, before installing or writing anything) on a machine that has a slurm.conf these tests did
# not write, or SLURM / munge daemons already running: a cluster node or login node is left alone.
set -euo pipefail
STATE=${1:?state directory}
CONF_DIR=${SLURM_CONF_DIR:-/etc/slurm}
MARK="# written by detachment tests/slurm/start-local-slurm.sh"
if [ -e "$CONF_DIR/slurm.conf" ] && ! grep -qxF "$MARK" "$CONF_DIR/slurm.conf"; then
  echo "refusing to start a test SLURM: $CONF_DIR/slurm.conf exists and was not written by these tests" >&2
  exit 3
fi
for d in slurmctld slurmd munged; do
  if pgrep -x "$d" >/dev/null 2>&1; then
    echo "refusing to start a test SLURM: a $d is already running on this machine" >&2
    exit 3
  fi
done
mkdir -p "$STATE"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurm-wlm munge >/dev/null
fi
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /etc/munge /var/lib/munge /var/log/munge
export SLURM_CONF="$CONF_DIR/slurm.conf"
cat > "$SLURM_CONF" <<CONF
$MARK
ClusterName=localtest
SlurmctldHost=$host
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
# no cgroups in a container: track processes by /proc, no task plugin
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# the executor plugin polls squeue: finished jobs must stay visible for >= 3x its initial wait
MinJobAge=300
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 700 /etc/munge /var/lib/munge
chmod 400 /etc/munge/munge.key
chmod 755 /run/munge
# start munged as the munge user directly (setpriv, not a wrapper), so the recorded PID is its own
setpriv --reuid=munge --regid=munge --init-groups munged -F >"$STATE/munged.log" 2>&1 &
echo $! > "$STATE/munged.pid_bg"
for _ in $(seq 50); do [ -S /run/munge/munge.socket.2 ] && break; sleep 0.1; done
slurmctld -D -i >"$STATE/slurmctld.out" 2>&1 &
echo $! > "$STATE/slurmctld.pid_bg"
slurmd -D >"$STATE/slurmd.out" 2>&1 &
echo $! > "$STATE/slurmd.pid_bg"
for _ in $(seq 120); do
  state=$(sinfo -h -N -o %t 2>/dev/null | head -n1 || true)
  case "$state" in idle*) echo "SLURM ready: node $host idle"; exit 0;; esac
  sleep 0.5
done
echo "SLURM did not become idle; logs in $STATE" >&2
exit 1
