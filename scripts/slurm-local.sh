#!/usr/bin/env bash
# A real Slurm on this machine: one controller and two compute nodes (n1, n2: two slurmd
# daemons on this host, each its own node name and port), from Debian's packages, for the
# tests of slurm/ (label slurm) and for trying a batch script before a cluster sees it.
#   scripts/slurm-local.sh start  [DIR]   installs what is missing, writes DIR/slurm.conf,
#                                         starts munged, slurmctld and both slurmd, waits
#                                         until the nodes are idle; prints the SLURM_CONF line
#   scripts/slurm-local.sh status [DIR]   sinfo and squeue of that cluster
#   scripts/slurm-local.sh stop   [DIR]   stops every daemon it started (by pid), cancels jobs
# DIR (default /tmp/hydra-slurm) holds the configuration, state, logs and pids: nothing is
# written elsewhere except the installed packages. HYDRA_SLURM_PORT (default 16800) is the
# first of the four ports it uses (controller, slurmd, n1, n2); HYDRA_SLURM_CPUS (default 2)
# the CPUs each node offers. Runs as root (the daemons and the jobs run as root).
set -euo pipefail
ACTION=${1:?usage: scripts/slurm-local.sh start|status|stop [DIR]}
DIR=$(realpath -m "${2:-/tmp/hydra-slurm}")
PORT=${HYDRA_SLURM_PORT:-16800}
CPUS=${HYDRA_SLURM_CPUS:-2}
export SLURM_CONF="$DIR/slurm.conf"

install_missing() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null &&
    command -v munged >/dev/null && return
  echo "slurm-local: installing slurmctld, slurmd, slurm-client and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
  mkdir -p "$DIR"/{state,log,spool-n1,spool-n2}
  local host
  host=$(hostname)
  # Nodes n1 and n2 are two slurmd on this host (Debian builds Slurm with multiple-slurmd
  # support: slurmd -N NAME); %n gives each its own spool directory and pid file.
  # config_overrides: the nodes offer HYDRA_SLURM_CPUS whatever the hardware says.
  # cred_expire=10: a job step credential's lifetime, which is also how long a requeued job
  # waits before it may start again (default 120 s): until then a slurmd still refuses the
  # job id it has just killed ("Job credential revoked").
  cat > "$SLURM_CONF" <<EOF
ClusterName=hydra-local
SlurmctldHost=$host
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
AuthInfo=socket=$DIR/munge.socket,cred_expire=10
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool-%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait=10
NodeName=n1 NodeHostname=$host Port=$((PORT + 2)) CPUs=$CPUS State=UNKNOWN
NodeName=n2 NodeHostname=$host Port=$((PORT + 3)) CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start_munge() {
  # A key and socket of its own: the system's munged (if any) is left alone.
  if [ ! -f "$DIR/munge.key" ]; then
    head -c 1024 /dev/urandom > "$DIR/munge.key"
    chmod 400 "$DIR/munge.key"
  fi
  munged --force --key-file="$DIR/munge.key" --socket="$DIR/munge.socket" --pid-file="$DIR/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge.seed"
}

wait_idle() {
  for _ in $(seq 120); do
    if [ "$(sinfo -h -N -o '%t' 2>/dev/null | grep -c '^idle')" = 2 ]; then return 0; fi
    sleep 0.5
  done
  echo "slurm-local: the nodes did not become idle within 60 s:" >&2
  sinfo -N >&2 || true
  tail -5 "$DIR"/log/*.log >&2 || true
  return 1
}

stop_all() {
  # Jobs are cancelled only when there is a controller to ask: without one scancel retries for
  # a minute (it made every start a minute longer).
  if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
    scancel --full --quiet "--partition=debug" 2>/dev/null || true
  fi
  for pidfile in "$DIR"/slurmd-n1.pid "$DIR"/slurmd-n2.pid "$DIR"/slurmctld.pid "$DIR"/munged.pid; do
    [ -f "$pidfile" ] || continue
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

case "$ACTION" in
  start)
    install_missing
    stop_all  # a cluster left in DIR by an earlier start
    write_config
    start_munge
    slurmctld -i
    slurmd -N n1
    slurmd -N n2
    if ! wait_idle; then stop_all; exit 1; fi
    echo "slurm-local: cluster up in $DIR (nodes n1, n2 with $CPUS CPUs each); use it with:"
    echo "export SLURM_CONF=$SLURM_CONF"
    ;;
  status)
    sinfo -N
    squeue
    ;;
  stop)
    stop_all
    echo "slurm-local: stopped the cluster in $DIR"
    ;;
  *)
    echo "usage: scripts/slurm-local.sh start|status|stop [DIR]" >&2
    exit 2
    ;;
esac
