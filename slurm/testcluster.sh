#!/usr/bin/env bash
# testcluster.sh - a REAL single-machine SLURM cluster (Debian packages) for tests and CI.
#
#   bash slurm/testcluster.sh up             install (if needed), configure, start, prove with a job
#   bash slurm/testcluster.sh status         exit 0 and print state when up; non-zero otherwise
#   bash slurm/testcluster.sh down [--purge] stop everything; --purge also deletes state, DB, configs
#
# Environment knobs (read by `up`; changing one between runs restarts slurmctld + slurmd):
#   SLURM_LOCAL_NODES=1            N>1: N slurmd on this host, nodes n1..nN, ports 17001..
#   SLURM_LOCAL_FAKE_GPUS=2        fake GPUs (GRES gpu) per node; 0 = no GRES at all
#   SLURM_LOCAL_MAX_ARRAY_SIZE=    unset = Slurm default (1001); e.g. 50 to test array splitting
#   SLURM_LOCAL_MAX_SUBMIT_JOBS=   unset = no limit; N = MaxSubmitJobsPerUser of the QOS `limited`
#                                  (jobs with --qos=limited: pending + running, array tasks each
#                                  counted). Set through sacctmgr: changing it restarts no daemon.
#
# Needs root, Debian 12 (slurm 22.05), no systemd required. Everything lives under
# /var/spool/slurm-local plus /etc/slurm/{slurm,gres,slurmdbd}.conf (marked as managed).
# Accounting (slurmdbd + a private MariaDB on 127.0.0.1:3307) is included because submitit
# needs a working `sacct`. Background and measurements: see slurm/README.md.
set -Eeuo pipefail
trap 'printf "testcluster: ERROR: unexpected failure (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

readonly MARKER='# managed by mnistsweep testcluster.sh'
readonly R=/var/spool/slurm-local
readonly ETC=/etc/slurm
readonly CONF_SLURM=$ETC/slurm.conf
readonly CONF_GRES=$ETC/gres.conf
readonly CONF_DBD=$ETC/slurmdbd.conf
readonly CLUSTER=localcluster
readonly DB_PORT=3307
readonly DB_SOCK=$R/mysql/mysqld.sock
readonly DB_PASS=slurm-local-pass
readonly LOCKFILE=/run/mnistsweep-testcluster.lock
readonly SYSPATH=/usr/sbin:/usr/bin:/sbin:/bin
readonly PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
# Daemons must not inherit venv/CI variables (nor the lock on fd 9: every start closes it).
readonly DAEMON_ENV=(env -i "PATH=$SYSPATH")

# Client commands must talk to *this* cluster: drop variables that redirect or alter them
# (SLURM_CONF, SBATCH_*, ...), and prefer the system binaries over any shim on PATH.
for _v in $(compgen -e); do
  case $_v in
    SLURM_LOCAL_*) ;;
    SLURM_* | SBATCH_* | SALLOC_* | SRUN_* | SQUEUE_* | SINFO_* | SACCT_* | SCONTROL_* | SACCTMGR_*) unset "$_v" ;;
  esac
done
unset _v
export PATH=$SYSPATH:$PATH
export LC_ALL=C
cd /

T0=${EPOCHREALTIME/,/.}

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((10#$t / 1000)); }
elapsed() { awk -v a="$T0" -v b="${EPOCHREALTIME/,/.}" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[testcluster %5ss] %s\n' "$(elapsed)" "$*"; }
warn() { printf '[testcluster %5ss] WARNING: %s\n' "$(elapsed)" "$*" >&2; }
die() {
  printf 'testcluster: ERROR: %s\n' "$*" >&2
  exit 1
}

# Show the end of a log file on stderr (used before dying).
show_log() {
  [[ -r $1 ]] || return 0
  printf -- '---- last lines of %s ----\n' "$1" >&2
  tail -n "${2:-20}" "$1" >&2 || true
  printf -- '----\n' >&2
}

require_root() {
  [[ $EUID -eq 0 ]] || die "must run as root (the cluster's daemons run as root/munge/mysql); try: sudo bash $0 $*"
}

take_lock() {
  exec 9>"$LOCKFILE"
  flock -w 600 9 || die "another testcluster.sh is still running after 600 s (lock $LOCKFILE)"
}

# wait_for TIMEOUT_S CMD... : poll CMD every 0.2 s until it succeeds; 1 on timeout.
wait_for() {
  local end=$(($(now_ms) + $1 * 1000))
  shift
  until "$@" >/dev/null 2>&1; do
    (($(now_ms) < end)) || return 1
    sleep 0.2
  done
}

# Process state letter from /proc/PID/stat (field 3; comm may contain spaces and parens).
pid_state() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  printf '%s' "${s%% *}"
}
# Alive = exists and is neither a zombie nor dead (PID 1 here reaps late, so kill -0 lies).
pid_alive() {
  local st
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  st=$(pid_state "$1") || return 1
  [[ $st != Z && $st != X && $st != x ]]
}
# pid_is PID COMM: guard against a recycled PID in a stale pid file.
pid_is() {
  local c
  c=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
  [[ $c == "$2" ]]
}
read_pid() {
  local p=""
  if [[ -r $1 ]]; then read -r p <"$1" || true; fi
  [[ $p =~ ^[0-9]+$ ]] || return 1
  printf '%s' "$p"
}
# daemon_pid PIDFILE COMM: print the PID if that daemon is running.
daemon_pid() {
  local p
  p=$(read_pid "$1") || return 1
  pid_alive "$p" && pid_is "$p" "$2" || return 1
  printf '%s' "$p"
}

# stop_daemon NAME PIDFILE COMM: SIGTERM, wait up to 15 s for exit (or zombie), then SIGKILL.
# wait_gone PID TRIES: poll every 0.1 s until PID is gone; fails if it still runs after TRIES.
wait_gone() {
  local i
  for ((i = 0; i < $2; i++)); do
    pid_alive "$1" || return 0
    sleep 0.1
  done
  ! pid_alive "$1"
}

stop_daemon() {
  local name=$1 pf=$2 comm=$3 pid
  if ! pid=$(daemon_pid "$pf" "$comm"); then
    rm -f "$pf"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" 150; then
    warn "$name (pid $pid) still running 15 s after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 50 || die "could not stop $name (pid $pid)"
  fi
  rm -f "$pf"
}

# Something (not ours) listening on 127.0.0.1:PORT?
port_busy() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Start a self-forking daemon through a clean environment; die with its log on failure.
start_forking() {
  local name=$1 logf=$2
  shift 2
  if ! "${DAEMON_ENV[@]}" "$@" >>"$R/log/start.log" 2>&1 9>&-; then
    show_log "$R/log/start.log" 10
    show_log "$logf"
    die "$name failed to start ($*)"
  fi
}

# Hash of the config files (a missing file hashes as empty) - what a daemon was started with.
conf_sha() {
  local f sum
  sum=$(for f in "$@"; do
    echo "== $f"
    if [[ -r $f ]]; then cat "$f"; fi
  done | sha256sum)
  echo "${sum:0:16}"
}

# ---------------------------------------------------------------------------------------------
# probes (all bounded)
# ---------------------------------------------------------------------------------------------
munge_ok() { timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }
db_ping() { timeout 5 mariadb-admin --no-defaults --socket="$DB_SOCK" -uroot ping >/dev/null 2>&1; }
dbd_ok() { timeout 10 sacctmgr -n -P show cluster >/dev/null 2>&1; }
ctld_ok() { [[ $(timeout 10 scontrol ping 2>/dev/null) == *"is UP"* ]]; }

# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
# int_in VALUE MIN MAX
int_in() { [[ $1 =~ ^[0-9]{1,9}$ ]] && ((10#$1 >= $2 && 10#$1 <= $3)); }

read_knobs() {
  NODES=${SLURM_LOCAL_NODES:-1}
  GPUS=${SLURM_LOCAL_FAKE_GPUS:-2}
  MAX_ARRAY=${SLURM_LOCAL_MAX_ARRAY_SIZE:-}
  MAX_SUBMIT=${SLURM_LOCAL_MAX_SUBMIT_JOBS:-}
  if [[ -n $MAX_SUBMIT ]]; then
    int_in "$MAX_SUBMIT" 1 1000000 ||
      die "SLURM_LOCAL_MAX_SUBMIT_JOBS must be an integer 1..1000000 (got '$MAX_SUBMIT')"
    MAX_SUBMIT=$((10#$MAX_SUBMIT))
  fi
  int_in "$NODES" 1 64 || die "SLURM_LOCAL_NODES must be an integer 1..64 (got '$NODES')"
  int_in "$GPUS" 0 16 || die "SLURM_LOCAL_FAKE_GPUS must be an integer 0..16 (got '$GPUS')"
  if [[ -n $MAX_ARRAY ]]; then
    int_in "$MAX_ARRAY" 1 4000001 ||
      die "SLURM_LOCAL_MAX_ARRAY_SIZE must be an integer 1..4000001 (got '$MAX_ARRAY')"
    MAX_ARRAY=$((10#$MAX_ARRAY))
  fi
  NODES=$((10#$NODES))
  GPUS=$((10#$GPUS))
}

detect_host() {
  HOST=$(hostname -s 2>/dev/null || true)
  [[ -n $HOST ]] || HOST=$(uname -n)
  HOST=${HOST%%.*}
  [[ $HOST =~ ^[A-Za-z0-9][A-Za-z0-9_-]*$ ]] || die "unusable host name '$HOST' for slurm.conf"

  # Topology as slurmd itself sees it (avoids INVAL and "reconfigured socket/core" issues).
  local line kv mem_kb mem_mb
  CPUS="" TOPO=""
  line=$(timeout 20 slurmd -C 2>/dev/null) || line=""
  line=${line%%$'\n'*}
  for kv in $line; do
    case $kv in
      CPUs=*) CPUS=${kv#*=} ;;
      Boards=* | SocketsPerBoard=* | CoresPerSocket=* | ThreadsPerCore=*) TOPO+=" $kv" ;;
      RealMemory=*) SLURMD_MEM=${kv#*=} ;;
    esac
  done
  if ! [[ $CPUS =~ ^[0-9]+$ ]]; then
    CPUS=$(nproc)
    TOPO=""
  fi
  # RealMemory = MemTotal - 1024 MB (stable between runs, unlike free memory), split over nodes.
  mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
  mem_mb=$((mem_kb / 1024))
  if [[ ${SLURMD_MEM:-} =~ ^[0-9]+$ ]] && ((SLURMD_MEM < mem_mb)); then mem_mb=$SLURMD_MEM; fi
  if ((mem_mb > 2048)); then mem_mb=$((mem_mb - 1024)); else mem_mb=$((mem_mb / 2)); fi
  NODE_MEM=$((mem_mb / NODES))
  ((NODE_MEM >= 256)) || die "not enough memory for $NODES simulated nodes (${NODE_MEM} MB each)"

  NODE_LIST=()
  if ((NODES == 1)); then
    NODE_LIST=("$HOST")
  else
    local i
    for ((i = 1; i <= NODES; i++)); do NODE_LIST+=("n$i"); done
  fi
}

# Port of a node's slurmd.
node_port() {
  if ((NODES == 1)); then echo 6818; else echo $((17000 + ${1#n})); fi
}

gen_slurm_conf() {
  local nodeline gresline="" tres="" maxarr=""
  if ((GPUS > 0)); then
    gresline="GresTypes=gpu"
    tres="AccountingStorageTRES=gres/gpu"
  fi
  [[ -n $MAX_ARRAY ]] && maxarr="MaxArraySize=$MAX_ARRAY"
  if ((NODES == 1)); then
    nodeline="NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS$TOPO RealMemory=$NODE_MEM"
  else
    nodeline="NodeName=n[1-$NODES] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=[17001-$((17000 + NODES))] CPUs=$CPUS$TOPO RealMemory=$NODE_MEM"
  fi
  ((GPUS > 0)) && nodeline+=" Gres=gpu:$GPUS"
  nodeline+=" State=UNKNOWN"
  cat <<EOF
$MARKER
# Generated by slurm/testcluster.sh (SLURM_LOCAL_NODES=$NODES SLURM_LOCAL_FAKE_GPUS=$GPUS SLURM_LOCAL_MAX_ARRAY_SIZE=${MAX_ARRAY:-default}).
# Do not edit: the next 'up' rewrites it. Remove the first line to take it over by hand.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job is held (default 120 s)
AuthInfo=cred_expire=10
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
# Memory is enforced as on a real cluster: without cgroups (TaskPlugin=task/none), slurmd polls
# each step's resident memory every second and kills a step over its --mem (sacct: FAILED 0:9,
# the log: "exceeded memory limit").
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=300
MailProg=/bin/true
${maxarr}
StateSaveLocation=$R/ctld
SlurmdSpoolDir=$R/d/%n
SlurmctldPidFile=$R/slurmctld.pid
SlurmdPidFile=$R/slurmd-%n.pid
SlurmctldLogFile=$R/log/slurmctld.log
SlurmdLogFile=$R/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=6817
SlurmdPort=6818
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
# association and QOS limits (see SLURM_LOCAL_MAX_SUBMIT_JOBS) apply, as on real clusters
AccountingStorageEnforce=limits,qos
${tres}
JobCompType=jobcomp/none
${gresline}
$nodeline
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

gpu_files() { # node -> File= value
  if ((GPUS == 1)); then echo "$R/gpu/$1-gpu0"; else echo "$R/gpu/$1-gpu[0-$((GPUS - 1))]"; fi
}

gen_gres_conf() {
  local n
  echo "$MARKER"
  echo "# Fake GPUs: character devices aliasing /dev/null (a File= is required, regular files are rejected)."
  for n in "${NODE_LIST[@]}"; do
    echo "NodeName=$n Name=gpu File=$(gpu_files "$n")"
  done
}

gen_dbd_conf() {
  cat <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$R/log/slurmdbd.log
PidFile=$R/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
}

is_managed() { [[ $(head -n1 "$1" 2>/dev/null) == "$MARKER" ]]; }

# Refuse before touching anything if a config file exists that we did not write.
check_managed() {
  local f
  for f in "$@"; do
    if [[ -e $f ]] && ! is_managed "$f"; then
      die "$f exists and was not written by this script (its first line is not '$MARKER'). Refusing to overwrite it: move it away (or delete it) if this machine may host the test cluster."
    fi
  done
}

# write_managed PATH MODE CONTENT: write atomically if the content differs.
write_managed() {
  local f=$1 mode=$2 content=$3 tmp
  if [[ -e $f ]] && [[ $(cat "$f") == "$content" ]]; then
    chmod "$mode" "$f"
    return 0
  fi
  tmp=$(mktemp "$f.XXXXXX")
  printf '%s\n' "$content" >"$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$f"
  log "wrote $f"
}

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------
missing_packages() {
  local p st
  st=$(dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
  for p in "${PACKAGES[@]}"; do
    [[ $'\n'$st$'\n' == *$'\n'"$p install ok installed"$'\n'* ]] || echo "$p"
  done
}

install_packages() {
  local missing
  mapfile -t missing < <(missing_packages)
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get: this script needs Debian/Ubuntu"
  log "installing packages: ${missing[*]}"
  # Keep the packages' init scripts from starting the system's munge/mariadb/slurm daemons.
  local own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  local apt=(apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  local aptlog=/tmp/testcluster-apt.log ok=0
  export DEBIAN_FRONTEND=noninteractive
  if compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    "${apt[@]}" install --no-install-recommends "${PACKAGES[@]}" >"$aptlog" 2>&1 && ok=1
  fi
  if ((!ok)); then
    log "apt-get update (package lists empty or install failed)"
    timeout 600 "${apt[@]}" update >>"$aptlog" 2>&1 || {
      show_log "$aptlog"
      die "apt-get update failed (log: $aptlog)"
    }
    "${apt[@]}" install --no-install-recommends "${PACKAGES[@]}" >>"$aptlog" 2>&1 || {
      show_log "$aptlog"
      die "apt-get install ${PACKAGES[*]} failed (log: $aptlog)"
    }
  fi
  if ((own_policy)); then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
  log "packages installed"
}

# ---------------------------------------------------------------------------------------------
# daemons
# ---------------------------------------------------------------------------------------------
STARTED=() # what this run (re)started, for the summary

start_munge() {
  if munge_ok; then return 0; fi
  [[ -s /etc/munge/munge.key ]] || {
    log "creating /etc/munge/munge.key"
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  }
  local pf=/run/munge/munged.pid pid
  if pid=$(daemon_pid "$pf" munged); then
    # A munged that runs but does not answer: give it a moment, then report.
    wait_for 10 munge_ok && return 0
    die "munged (pid $pid, not started by this script) runs but 'munge -n | unmunge' fails; see /var/log/munge/munged.log"
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 755 /run/munge
  log "starting munged"
  if ! "${DAEMON_ENV[@]}" runuser -u munge -- /usr/sbin/munged >>"$R/log/start.log" 2>&1 9>&-; then
    show_log "$R/log/start.log" 10
    show_log /var/log/munge/munged.log
    die "munged failed to start"
  fi
  wait_for 10 munge_ok || {
    show_log /var/log/munge/munged.log
    die "munged started but 'munge -n | unmunge' fails"
  }
  wait_for 5 daemon_pid "$pf" munged || true
  pid=$(daemon_pid "$pf" munged) || die "munged works but $pf does not name it"
  echo "$pid" >"$R/munged.ours"
  STARTED+=(munged)
}

start_mariadb() {
  local pf=$R/mysql/mysqld.pid pid
  if pid=$(daemon_pid "$pf" mariadbd); then
    wait_for 30 db_ping || die "our MariaDB (pid $pid) runs but does not answer on $DB_SOCK; see $R/log/mariadb.log"
    return 0
  fi
  port_busy "$DB_PORT" && die "127.0.0.1:$DB_PORT is in use by another program; the test cluster's MariaDB needs it"
  if [[ ! -e $R/mysql.initialized ]]; then
    log "initialising MariaDB datadir $R/mysql"
    rm -rf "$R/mysql"
    mkdir -p "$R/mysql"
    chown mysql:mysql "$R/mysql"
    if ! "${DAEMON_ENV[@]}" mariadb-install-db --no-defaults --user=mysql --datadir="$R/mysql" \
      --skip-test-db --auth-root-authentication-method=socket >"$R/log/mariadb-install.log" 2>&1; then
      show_log "$R/log/mariadb-install.log"
      die "mariadb-install-db failed"
    fi
    touch "$R/mysql.initialized"
  fi
  touch "$R/log/mariadb.log"
  chown mysql:mysql "$R/log/mariadb.log"
  log "starting MariaDB on 127.0.0.1:$DB_PORT"
  "${DAEMON_ENV[@]}" setsid -f /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$R/mysql" \
    --socket="$DB_SOCK" --pid-file="$pf" --bind-address=127.0.0.1 --port="$DB_PORT" \
    --skip-name-resolve --log-error="$R/log/mariadb.log" \
    --innodb-buffer-pool-size=512M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 9>&-
  wait_for 60 db_ping || {
    show_log "$R/log/mariadb.log"
    die "MariaDB did not answer within 60 s"
  }
  timeout 30 mariadb --no-defaults --socket="$DB_SOCK" -uroot -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    FLUSH PRIVILEGES;" || die "could not create the MariaDB user for slurmdbd"
  STARTED+=(mariadb)
}

start_slurmdbd() {
  local pf=$R/slurmdbd.pid sha
  sha=$(conf_sha "$CONF_DBD")
  if daemon_pid "$pf" slurmdbd >/dev/null; then
    if [[ $(cat "$R/slurmdbd.sha" 2>/dev/null) == "$sha" ]] && wait_for 20 dbd_ok; then return 0; fi
    log "slurmdbd.conf changed (or slurmdbd unresponsive): restarting slurmdbd"
    stop_daemon slurmdbd "$pf" slurmdbd
  fi
  port_busy 6819 && die "port 6819 is in use by a slurmdbd (or other program) not started by this script"
  log "starting slurmdbd"
  start_forking slurmdbd "$R/log/slurmdbd.log" /usr/sbin/slurmdbd
  wait_for 60 dbd_ok || {
    show_log "$R/log/slurmdbd.log"
    die "slurmdbd did not answer 'sacctmgr show cluster' within 60 s"
  }
  echo "$sha" >"$R/slurmdbd.sha"
  STARTED+=(slurmdbd)
}

slurmd_pidfiles() { compgen -G "$R/slurmd-*.pid" || true; }

start_slurm() {
  local sha n pf restart=0
  sha=$(conf_sha "$CONF_SLURM" "$CONF_GRES")

  # Config change => restart slurmctld AND every slurmd (reconfigure is not enough).
  if daemon_pid "$R/slurmctld.pid" slurmctld >/dev/null; then
    [[ $(cat "$R/slurmctld.sha" 2>/dev/null) == "$sha" ]] || restart=1
  fi
  for pf in $(slurmd_pidfiles); do
    n=${pf##*/slurmd-}
    n=${n%.pid}
    if daemon_pid "$pf" slurmd >/dev/null && [[ $(cat "$R/slurmd-$n.sha" 2>/dev/null) != "$sha" ]]; then
      restart=1
    fi
  done
  if ((restart)); then
    log "configuration changed: restarting slurmctld and slurmd"
    if [[ -n $(timeout 10 squeue -h -o %i 2>/dev/null) ]]; then
      warn "jobs are queued/running; they may be lost by the restart"
    fi
    for pf in $(slurmd_pidfiles); do stop_daemon "slurmd (${pf##*/})" "$pf" slurmd; done
    stop_daemon slurmctld "$R/slurmctld.pid" slurmctld
  fi

  # slurmd of nodes that are no longer configured.
  for pf in $(slurmd_pidfiles); do
    n=${pf##*/slurmd-}
    n=${n%.pid}
    if [[ " ${NODE_LIST[*]} " != *" $n "* ]]; then
      stop_daemon "slurmd $n (not configured any more)" "$pf" slurmd
    fi
  done

  if ! daemon_pid "$R/slurmctld.pid" slurmctld >/dev/null; then
    port_busy 6817 && die "port 6817 is in use by a slurmctld (or other program) not started by this script"
    log "starting slurmctld"
    start_forking slurmctld "$R/log/slurmctld.log" /usr/sbin/slurmctld
    echo "$sha" >"$R/slurmctld.sha"
    STARTED+=(slurmctld)
  fi
  wait_for 30 ctld_ok || {
    show_log "$R/log/slurmctld.log"
    die "slurmctld did not answer 'scontrol ping' within 30 s"
  }

  for n in "${NODE_LIST[@]}"; do
    daemon_pid "$R/slurmd-$n.pid" slurmd >/dev/null || start_slurmd "$n"
  done
}

start_slurmd() {
  local n=$1
  port_busy "$(node_port "$n")" && die "port $(node_port "$n") (slurmd $n) is in use by a program not started by this script"
  mkdir -p "$R/d/$n"
  log "starting slurmd $n"
  start_forking "slurmd $n" "$R/log/slurmd-$n.log" /usr/sbin/slurmd -N "$n"
  conf_sha "$CONF_SLURM" "$CONF_GRES" >"$R/slurmd-$n.sha"
  STARTED+=("slurmd:$n")
}

# Node states, one "name state" per line.
node_states() { timeout 10 sinfo -h -N -o '%N %T' 2>/dev/null | sort -u; }

# All configured nodes are present and usable.
nodes_ready() {
  local states n st
  states=$(node_states) || return 1
  for n in "${NODE_LIST[@]}"; do
    st=$(awk -v n="$n" '$1 == n { print $2 }' <<<"$states")
    [[ $st =~ ^(idle|mixed|allocated|completing)$ ]] || return 1
  done
}

wait_nodes_ready() {
  local start end next_fix=0 t n st states
  start=$(now_ms)
  end=$((start + 60000))
  # DRAIN/INVAL/FAIL are sticky (ReturnToService=2 does not clear them; the config has just
  # been fixed), so resume those at once and again every 10 s. DOWN is normal for a few
  # seconds after a (re)start, so DOWN nodes are only resumed after 10 s - or at once when
  # nothing was started (a stale state, e.g. left behind by a test).
  local grace=10000
  ((${#STARTED[@]} == 0)) && grace=0
  until nodes_ready; do
    t=$(now_ms)
    if ((t >= end)); then
      timeout 10 sinfo -N -o '%N %T %E' >&2 || true
      for n in "${NODE_LIST[@]}"; do show_log "$R/log/slurmd-$n.log" 10; done
      show_log "$R/log/slurmctld.log" 15
      die "nodes not ready within 60 s"
    fi
    if ((t >= next_fix)); then
      next_fix=$((t + 10000))
      states=$(node_states) || states=""
      for n in "${NODE_LIST[@]}"; do
        st=$(awk -v n="$n" '$1 == n { print $2 }' <<<"$states")
        [[ $st == *down* ]] && ((t - start < grace)) && continue
        case $st in
          *inval*)
            # INVAL cannot be resumed: slurmd must re-register with the (now fixed) config.
            log "node $n is '$st': restarting its slurmd"
            stop_daemon "slurmd $n" "$R/slurmd-$n.pid" slurmd
            start_slurmd "$n"
            next_fix=$(($(now_ms) + 2000)) # then resume the DRAIN it leaves behind
            ;;
          *drain* | *down* | *fail*)
            log "node $n is '$st': resuming it"
            timeout 10 scontrol update nodename="$n" state=resume >/dev/null 2>&1 ||
              timeout 10 scontrol update nodename="$n" state=idle >/dev/null 2>&1 || true
            ;;
        esac
      done
    fi
    sleep 0.2
  done
}

# A real batch job through the scheduler and accounting.
smoke_job() {
  local out j st i busy
  log "smoke job: sbatch --wait ... --wrap true"
  out=$(timeout 60 sbatch --parsable --wait -o /dev/null -t 1 -c 1 --mem=16 -J testcluster-smoke \
    --chdir=/ --wrap true 2>&1) || true
  j=""
  [[ $out =~ (^|$'\n')([0-9]+)(;|$'\n'|$) ]] && j=${BASH_REMATCH[2]}
  [[ -n $j ]] || die "smoke job submission failed: $out"
  for ((i = 0; i < 50; i++)); do
    st=$(timeout 10 sacct -n -X -P -o State -j "$j" 2>/dev/null || true)
    st=${st%%$'\n'*}
    [[ $st == COMPLETED ]] && break
    [[ $st =~ ^(FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) ]] && break
    # Still pending after sbatch's timeout: the cluster is busy with other people's jobs.
    if ((i == 0)) && [[ $(timeout 10 squeue -h -j "$j" -o %T 2>/dev/null) == PENDING ]]; then
      # Any other job counts, pending ones too: another suite's held job or a job between two
      # requeues keeps the node from the smoke job without being RUNNING at this instant.
      busy=$(timeout 10 squeue -h -o %i 2>/dev/null | grep -cvx "$j" || true)
      timeout 10 scancel "$j" || true
      if ((busy > 0)) && ((${#STARTED[@]} == 0)); then
        warn "smoke job $j could not start within 60 s: $busy job(s) occupy the cluster; it works, but is busy"
        SMOKE="skipped (busy)"
        return 0
      fi
      die "smoke job $j still pending after 60 s ($(timeout 10 squeue -h -j "$j" -o %r 2>/dev/null || true))"
    fi
    sleep 0.3
  done
  [[ $st == COMPLETED ]] || {
    show_log "$R/log/slurmctld.log" 15
    die "smoke job $j ended as '${st:-unknown to sacct}' (expected COMPLETED); sbatch said: $out"
  }
  SMOKE="job $j COMPLETED (sacct)"
}

cmd_up() {
  require_root up
  read_knobs
  take_lock
  install_packages
  check_managed "$CONF_SLURM" "$CONF_GRES" "$CONF_DBD"
  detect_host

  mkdir -p "$R"/{ctld,d,log,gpu} "$ETC"
  chmod 755 "$R"
  local n i f
  for n in "${NODE_LIST[@]}"; do
    mkdir -p "$R/d/$n"
    for ((i = 0; i < GPUS; i++)); do
      f=$R/gpu/$n-gpu$i
      [[ -c $f ]] || {
        rm -f "$f"
        mknod -m 666 "$f" c 1 3
      }
    done
  done

  write_managed "$CONF_SLURM" 644 "$(gen_slurm_conf | grep -v '^$')"
  if ((GPUS > 0)); then
    write_managed "$CONF_GRES" 644 "$(gen_gres_conf)"
  elif [[ -e $CONF_GRES ]]; then
    rm -f "$CONF_GRES"
    log "removed $CONF_GRES (SLURM_LOCAL_FAKE_GPUS=0)"
  fi
  write_managed "$CONF_DBD" 600 "$(gen_dbd_conf)"
  chown root:root "$CONF_DBD"
  printf '%s\n' "${NODE_LIST[@]}" >"$R/nodes"

  start_munge
  start_mariadb
  start_slurmdbd
  start_slurm
  wait_nodes_ready
  log "nodes ready: $(node_states | tr '\n' ' ')"
  apply_submit_limit
  SMOKE=""
  smoke_job

  local ver
  ver=$(timeout 10 sinfo -V 2>/dev/null || echo "slurm ?")
  echo
  echo "SLURM test cluster is UP ($ver, cluster '$CLUSTER', partition 'debug')"
  echo "  nodes:      ${NODE_LIST[*]}  (CPUs=$CPUS RealMemory=${NODE_MEM}MB each, fake GPUs=$GPUS each)"
  echo "  arrays:     MaxArraySize=${MAX_ARRAY:-default (1001)}"
  echo "  submit:     QOS $LIMITED_QOS: MaxSubmitJobsPerUser=${MAX_SUBMIT:-unlimited}"
  echo "  started:    ${STARTED[*]:-nothing (already running)}"
  echo "  smoke:      $SMOKE"
  echo "  logs/state: $R/log, $R   config: $CONF_SLURM"
  echo "  elapsed:    $(elapsed) s"
}

# The QOS `limited` (MaxSubmitJobsPerUser=SLURM_LOCAL_MAX_SUBMIT_JOBS, unlimited when unset), open
# to root and to whoever ran sudo: only jobs that ask for `--qos=limited` are limited, so a test
# of the limit never blocks anyone else's jobs. Set through slurmdbd: no daemon restarts. With
# AccountingStorageEnforce a user needs an association to submit, so $SUDO_USER gets one.
readonly LIMITED_QOS=limited
apply_submit_limit() {
  local user value=${MAX_SUBMIT:--1}
  if [[ -z $(timeout 10 sacctmgr -n -P show qos "name=$LIMITED_QOS" format=Name 2>/dev/null) ]]; then
    timeout 10 sacctmgr -i add qos "$LIMITED_QOS" >/dev/null || die "could not add QOS $LIMITED_QOS"
  fi
  timeout 10 sacctmgr -i modify qos where "name=$LIMITED_QOS" set "MaxSubmitJobsPerUser=$value" \
    >/dev/null || true # "nothing modified" when it is already set
  for user in root ${SUDO_USER:-}; do
    if [[ -z $(timeout 10 sacctmgr -n -P show assoc "user=$user" format=User 2>/dev/null) ]]; then
      timeout 10 sacctmgr -i add user "$user" account=root >/dev/null ||
        die "could not add an association for user $user"
    fi
    timeout 10 sacctmgr -i modify user where "name=$user" set "qos+=$LIMITED_QOS" >/dev/null ||
      true
  done
  log "QOS $LIMITED_QOS: MaxSubmitJobsPerUser=${MAX_SUBMIT:-unlimited}"
}

# ---------------------------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------------------------
stepd_count() {
  local d c n=0 st
  for d in /proc/[0-9]*; do
    c=$(cat "$d/comm" 2>/dev/null) || continue
    [[ $c == slurmstepd ]] || continue
    st=$(pid_state "${d#/proc/}") || continue
    [[ $st == Z ]] || n=$((n + 1))
  done
  echo "$n"
}

queue_empty() { [[ -z $(timeout 10 squeue -h -o %i 2>/dev/null) ]]; }
no_stepd() { [[ $(stepd_count) == 0 ]]; }

cmd_down() {
  local purge=0 arg
  for arg in "$@"; do
    case $arg in
      --purge) purge=1 ;;
      *) die "unknown option for down: $arg (usage: $0 down [--purge])" ;;
    esac
  done
  require_root down
  take_lock

  if daemon_pid "$R/slurmctld.pid" slurmctld >/dev/null && command -v squeue >/dev/null && ctld_ok; then
    local jobs
    jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
    if [[ -n $jobs ]]; then
      log "cancelling $(wc -l <<<"$jobs") job(s)"
      # shellcheck disable=SC2086  # one job id per word
      timeout 30 scancel $jobs 2>/dev/null || true
      wait_for 30 queue_empty ||
        warn "jobs still listed by squeue after 30 s: $(timeout 10 squeue -h -o '%i %T' 2>/dev/null | tr '\n' ' ')"
    fi
  fi
  # slurmstepd and job processes survive a slurmd stop: let them finish (never killed by name).
  wait_for 10 no_stepd || warn "$(stepd_count) slurmstepd process(es) still running"

  local pf
  for pf in $(slurmd_pidfiles); do stop_daemon "slurmd (${pf##*/})" "$pf" slurmd; done
  stop_daemon slurmctld "$R/slurmctld.pid" slurmctld
  stop_daemon slurmdbd "$R/slurmdbd.pid" slurmdbd
  stop_daemon mariadb "$R/mysql/mysqld.pid" mariadbd
  local ours
  if ours=$(read_pid "$R/munged.ours"); then
    if pid_alive "$ours" && pid_is "$ours" munged; then
      stop_daemon munged /run/munge/munged.pid munged
    fi
    rm -f "$R/munged.ours"
  fi
  rm -f "$R"/slurmctld.sha "$R"/slurmd-*.sha "$R"/slurmdbd.sha

  if ((purge)); then
    local f
    for f in "$CONF_SLURM" "$CONF_GRES" "$CONF_DBD"; do
      if [[ -e $f ]]; then
        if is_managed "$f"; then
          rm -f "$f"
          log "removed $f"
        else
          warn "kept $f (not written by this script)"
        fi
      fi
    done
    [[ $R == /var/spool/slurm-local ]] && rm -rf -- "$R"
    log "removed $R (controller state, accounting DB, logs)"
  fi
  log "SLURM test cluster is DOWN$( ((purge)) && echo ' (purged)') - elapsed $(elapsed) s"
}

# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------
cmd_status() {
  local bad=0 running=0 pid n nodes=() pf
  if ! command -v slurmctld >/dev/null || ! command -v sinfo >/dev/null; then
    echo "SLURM test cluster: NOT INSTALLED (run: bash $0 up)"
    return 3
  fi
  if [[ -r $R/nodes ]]; then mapfile -t nodes <"$R/nodes"; fi

  printf '%-22s %s\n' "daemon" "state"
  if munge_ok; then
    printf '%-22s %s\n' munged "ok$([[ -e $R/munged.ours ]] && echo ' (started by testcluster)')"
    running=1
  else
    printf '%-22s %s\n' munged "NOT WORKING"
    bad=1
  fi
  _st() { # label pidfile comm
    if pid=$(daemon_pid "$2" "$3"); then
      printf '%-22s %s\n' "$1" "running (pid $pid)"
      running=1
    else
      printf '%-22s %s\n' "$1" "NOT RUNNING"
      bad=1
    fi
  }
  if [[ ! -r $R/mysql/mysqld.pid && -e $R/mysql/mysqld.pid ]]; then
    # Non-root: the pid file is mysql's (0660); a ping answers "alive" even without access.
    if timeout 5 mariadb-admin --no-defaults --socket="$DB_SOCK" ping >/dev/null 2>&1; then
      printf '%-22s %s\n' "mariadb :$DB_PORT" "running"
      running=1
    else
      printf '%-22s %s\n' "mariadb :$DB_PORT" "NOT RUNNING"
      bad=1
    fi
  else
    _st "mariadb :$DB_PORT" "$R/mysql/mysqld.pid" mariadbd
  fi
  _st slurmdbd "$R/slurmdbd.pid" slurmdbd
  _st slurmctld "$R/slurmctld.pid" slurmctld
  for n in "${nodes[@]}"; do _st "slurmd $n" "$R/slurmd-$n.pid" slurmd; done
  for pf in $(slurmd_pidfiles); do # leftovers of another node layout
    n=${pf##*/slurmd-}
    n=${n%.pid}
    [[ " ${nodes[*]} " == *" $n "* ]] || _st "slurmd $n (extra)" "$pf" slurmd
  done
  ((${#nodes[@]} > 0)) || bad=1

  echo
  if ctld_ok; then
    timeout 10 sinfo -N -o '%12N %10P %12T %8c %10m %G' || bad=1
    echo
    timeout 10 sinfo -s || true
    local states st
    states=$(node_states) || states=""
    for n in "${nodes[@]}"; do
      st=$(awk -v n="$n" '$1 == n { print $2 }' <<<"$states")
      [[ $st =~ ^(idle|mixed|allocated|completing)$ ]] || {
        echo "node $n: ${st:-missing}"
        bad=1
      }
    done
    echo
    timeout 10 scontrol show config 2>/dev/null | grep -E '^(ClusterName|MaxArraySize|SchedulerParameters|SLURM_VERSION|AccountingStorageType|AccountingStorageEnforce|GresTypes) ' || true
    echo "QOS MaxSubmitJobsPerUser: $(timeout 10 sacctmgr -n -P show qos format=Name,MaxSubmitPU 2>/dev/null | tr '\n' ' ')"
    echo "jobs in queue: $(timeout 10 squeue -h -o %i 2>/dev/null | wc -l)"
  else
    echo "slurmctld does not answer 'scontrol ping'"
    bad=1
  fi
  echo
  if ((bad == 0)); then
    echo "SLURM test cluster: UP"
    return 0
  elif ((running)); then
    echo "SLURM test cluster: DEGRADED (run: bash $0 up)"
    return 1
  fi
  echo "SLURM test cluster: DOWN"
  return 3
}

usage() {
  cat <<EOF
usage: bash $0 up | status | down [--purge]

  up       install missing packages, write configs, start munge, MariaDB (127.0.0.1:$DB_PORT),
           slurmdbd, slurmctld, slurmd; wait until ready; prove it with a real job + sacct.
           Idempotent: on a healthy cluster it only runs the smoke job.
  status   print daemons, nodes, partition; exit 0 when up, 1 when degraded, 3 when down.
  down     cancel all jobs, stop the daemons it started; --purge also deletes $R
           (controller state, accounting DB, logs) and the generated configs in $ETC.

environment (for up): SLURM_LOCAL_NODES=1  SLURM_LOCAL_FAKE_GPUS=2  SLURM_LOCAL_MAX_ARRAY_SIZE=
                      SLURM_LOCAL_MAX_SUBMIT_JOBS=
EOF
}

main() {
  local cmd=${1:-}
  (($# > 0)) && shift
  case $cmd in
    up)
      (($# == 0)) || die "up takes no arguments (configure it with SLURM_LOCAL_* variables)"
      cmd_up
      ;;
    down) cmd_down "$@" ;;
    status)
      local rc=0
      cmd_status || rc=$?
      exit "$rc"
      ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
