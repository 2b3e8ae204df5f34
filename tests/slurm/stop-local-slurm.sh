#!/usr/bin/env bash
# Stop the daemons started by start-local-slurm.sh (only those, by their recorded PIDs).
STATE=${1:?state directory}
for d in slurmd slurmctld munged; do
  f="$STATE/$d.pid_bg"
  [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
done
for d in slurmd slurmctld munged; do
  f="$STATE/$d.pid_bg"
  [ -f "$f" ] || continue
  for _ in $(seq 50); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$(cat "$f")" 2>/dev/null
  rm -f "$f"
done
exit 0
