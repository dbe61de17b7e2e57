#!/usr/bin/env bash
# A throw-away one-node SLURM cluster on localhost, for tests and local trials of `hydra/launcher=slurm`.
#
#   scripts/slurm/cluster.sh up       install packages if missing, start munged + slurmctld + slurmd, wait for idle
#   scripts/slurm/cluster.sh down     cancel jobs, stop the daemons (keeps logs under the base dir)
#   scripts/slurm/cluster.sh status   show daemons, node and queue; exit 0 when up, 3 when down
#   scripts/slurm/cluster.sh env      print the `export` lines clients need:  eval "$(scripts/slurm/cluster.sh env)"
#
# All three subcommands are idempotent: `up` on a healthy cluster with the same settings returns at once, `up` with
# changed settings restarts it, `down` on a stopped cluster does nothing.
#
# Everything (munge key, slurm.conf, state, spool, logs, pid files, the sacct stand-in, env.sh) lives under one base
# directory; no system file is written except by apt-get. No systemd: the daemons are started by hand.
# Design notes and the pitfalls the slurm.conf below avoids: docs/slurm.md ("The local test cluster").
#
# Settings (environment variables):
#   ADATP_SLURM_BASE         base directory                                   (default /tmp/adatp-slurm)
#   ADATP_SLURM_PORT         slurmctld port; slurmd uses PORT+1               (default 6817)
#   ADATP_SLURM_PARTITION    name of the single (default) partition           (default debug)
#   ADATP_SLURM_GPUS         number of fake GPUs (GRES gpu) on the node; 0=none (default 2)
#   ADATP_SLURM_CRED_EXPIRE  munge credential lifetime = requeue hold, seconds (default 10; Slurm's default is 120)
#   ADATP_SLURM_UP_TIMEOUT   seconds to wait for the node to become idle     (default 60)
#
# Exit codes: 0 ok; 1 failure (diagnostics printed); 2 usage; 3 `status` of a cluster that is down;
#             77 cannot provision here (not root, no apt-get, packages not installable) -> tests turn this into a skip.
set -euo pipefail

EXIT_SKIP=77
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

BASE="${ADATP_SLURM_BASE:-/tmp/adatp-slurm}"
CTLD_PORT="${ADATP_SLURM_PORT:-6817}"
SLURMD_PORT="$((CTLD_PORT + 1))"
PARTITION="${ADATP_SLURM_PARTITION:-debug}"
NGPUS="${ADATP_SLURM_GPUS:-2}"
CRED_EXPIRE="${ADATP_SLURM_CRED_EXPIRE:-10}"
UP_TIMEOUT="${ADATP_SLURM_UP_TIMEOUT:-60}"

PKGS=(slurmctld slurmd slurm-client munge)
# The daemons live in /usr/sbin, which is not always on a CI runner's PATH.
export PATH="$PATH:/usr/sbin:/sbin"

# Layout under the base directory.
ETC="$BASE/etc"
LOG="$BASE/log"
RUN="$BASE/run"
MUNGE_DIR="$BASE/munge"
MUNGE_KEY="$MUNGE_DIR/munge.key"
MUNGE_SOCKET="$RUN/munge/munge.socket.2"
MUNGE_PID="$RUN/munge/munged.pid"
CTLD_PID="$RUN/slurmctld.pid"
# slurm.conf uses slurmd-%n; %n expands to the NodeName, which is always "localhost" here.
SLURMD_PID="$RUN/slurmd-localhost.pid"
SETTINGS="$ETC/settings"
ENV_FILE="$BASE/env.sh"
export SLURM_CONF="$ETC/slurm.conf" # every Slurm client (sinfo, squeue, srun, ...) below reads this

log() { printf '[cluster.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
skip() { log "SKIP: $*"; exit "$EXIT_SKIP"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

pid_alive() { # pid_alive <pidfile>
  [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

settings_fingerprint() {
  echo "port=$CTLD_PORT partition=$PARTITION gpus=$NGPUS cred_expire=$CRED_EXPIRE"
}

# ---------------------------------------------------------------------------------------------------------------- install
have_binaries() {
  local b
  for b in slurmctld slurmd sinfo squeue sbatch srun scontrol scancel munged munge unmunge; do
    command -v "$b" >/dev/null 2>&1 || return 1
  done
}

ensure_root() {
  # slurmd has to be root to start job steps (SlurmdUser=root), and munged/slurmctld run as root here to avoid any
  # state-directory ownership juggling (docs/slurm.md, "The local test cluster").
  [[ "$(id -u)" == 0 ]] || skip "must run as root (slurmd starts jobs as root; apt-get needs root); current uid $(id -u)"
}

ensure_packages() {
  if have_binaries; then
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || skip "SLURM binaries missing and apt-get not found; install ${PKGS[*]} by hand"
  local t0
  t0="$(now)"
  log "installing ${PKGS[*]} with apt-get (--no-install-recommends: 8 small packages instead of 43)"
  # DPkg::Lock::Timeout: wait instead of failing when another apt/dpkg run holds the lock.
  # The postinst scripts may print "invoke-rc.d: could not determine current runlevel" / "policy-rc.d denied": harmless,
  # nothing is auto-started without systemd and we never use the system units.
  if ! apt-get -q -o DPkg::Lock::Timeout=120 update >"$LOG/apt.log" 2>&1; then
    tail -n 20 "$LOG/apt.log" >&2 || true
    skip "apt-get update failed (no network or broken sources); see $LOG/apt.log"
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=120 install --no-install-recommends \
    "${PKGS[@]}" >>"$LOG/apt.log" 2>&1; then
    tail -n 20 "$LOG/apt.log" >&2 || true
    skip "apt-get install ${PKGS[*]} failed (packages unavailable?); see $LOG/apt.log"
  fi
  have_binaries || die "apt-get installed ${PKGS[*]} but some Slurm/munge binaries are still missing"
  log "packages installed in $(since "$t0") s: $(dpkg-query -W -f='${Package}=${Version} ' "${PKGS[@]}" 2>/dev/null)"
}

# ---------------------------------------------------------------------------------------------------------------- status
node_state() { # prints the node state (idle, mixed, allocated, down*, drained, ...) or nothing when unreachable
  timeout 10 sinfo -h -N -o '%T' 2>/dev/null | head -n 1 || true
}

is_up() {
  [[ -f "$SLURM_CONF" && -f "$SETTINGS" ]] || return 1
  pid_alive "$MUNGE_PID" && pid_alive "$CTLD_PID" && pid_alive "$SLURMD_PID" || return 1
  case "$(node_state)" in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
  esac
}

diagnostics() {
  log "---- diagnostics (base $BASE) ----"
  timeout 10 sinfo -N -l >&2 2>&1 || true
  timeout 10 scontrol show node localhost >&2 2>&1 || true
  local f
  for f in "$LOG/munged.log" "$LOG/slurmctld.log" "$LOG/slurmd-localhost.log"; do
    [[ -f "$f" ]] && { log "tail $f"; tail -n 25 "$f" >&2; }
  done
  log "---- end of diagnostics ----"
}

# --------------------------------------------------------------------------------------------------------------------- up
write_env_file() {
  # Clients need SLURM_CONF: without it Slurm 22.05 tries "configless" DNS SRV lookup and dies with
  # "Could not establish a configuration source". <base>/bin holds the sacct stand-in and must come first on PATH.
  cat >"$ENV_FILE" <<EOF
export SLURM_CONF="$SLURM_CONF"
export PATH="$BASE/bin:\$PATH"
EOF
}

start_munge() {
  mkdir -p "$MUNGE_DIR" "$RUN/munge"
  # munged refuses insecure permissions: key 0400, key dir 0700, socket dir 0755.
  chmod 0700 "$MUNGE_DIR"
  chmod 0755 "$RUN/munge"
  if [[ ! -s "$MUNGE_KEY" ]]; then
    if command -v mungekey >/dev/null 2>&1; then
      mungekey --create --keyfile="$MUNGE_KEY" --bits=1024
    else
      dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
  fi
  chmod 0400 "$MUNGE_KEY"
  # Our own key, socket, pid, log and seed, so the system munged (if any) is neither used nor disturbed.
  # 9>&-: the daemon must not inherit the lock file descriptor (it would hold the up/down lock for its whole life).
  munged --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" --pid-file="$MUNGE_PID" \
    --log-file="$LOG/munged.log" --seed-file="$MUNGE_DIR/munged.seed" 9>&-
  local i
  for i in $(seq 50); do
    munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "munged did not answer on $MUNGE_SOCKET (see $LOG/munged.log)"
}

node_line() {
  # Topology and memory must not exceed what slurmd detects, or the node goes INVAL/DRAIN ("Low RealMemory"); so take
  # them from `slurmd -C` and declare 90% of the memory. Omitting RealMemory would default to 1 MB and make every --mem
  # request fail.
  local detected key val out=""
  detected="$(slurmd -C 2>/dev/null | head -n 1)"
  [[ -n "$detected" ]] || die "slurmd -C printed nothing"
  for key in CPUs Boards SocketsPerBoard CoresPerSocket ThreadsPerCore RealMemory; do
    val="$(grep -o "\b$key=[0-9]*" <<<"$detected" | cut -d= -f2)"
    [[ -n "$val" ]] || die "slurmd -C did not report $key: $detected"
    [[ "$key" == RealMemory ]] && val="$((val * 9 / 10))"
    out+=" $key=$val"
  done
  local gres=""
  ((NGPUS > 0)) && gres=" Gres=gpu:$NGPUS"
  # NodeName=localhost although the hostname differs: slurmd is started with `-N localhost`, and NodeAddr pins it to
  # the loopback address.
  echo "NodeName=localhost NodeAddr=127.0.0.1${out}${gres} State=UNKNOWN"
}

write_fake_gpus() {
  # Fake GPUs (docs/slurm.md): GRES needs real character devices, otherwise slurmd either marks the node INVAL (count-only
  # gres) or gives jobs no CUDA_VISIBLE_DEVICES (regular files). Null devices (c 1 3) are enough; when mknod is not
  # permitted (some containers), a symlink to /dev/null works too.
  mkdir -p "$BASE/dev"
  rm -f "$BASE"/dev/gpu*
  local i
  for ((i = 0; i < NGPUS; i++)); do
    mknod "$BASE/dev/gpu$i" c 1 3 2>/dev/null || ln -s /dev/null "$BASE/dev/gpu$i"
  done
  echo "NodeName=localhost Name=gpu File=$BASE/dev/gpu[0-$((NGPUS - 1))]" >"$ETC/gres.conf"
}

write_slurm_conf() {
  local gres_types="" node
  node="$(node_line)"
  if ((NGPUS > 0)); then
    write_fake_gpus
    gres_types="GresTypes=gpu"
  else
    rm -f "$ETC/gres.conf"
  fi
  : >"$ETC/plugstack.conf" # an empty SPANK config, so slurmd never reads the system one
  cat >"$SLURM_CONF" <<EOF
# Generated by scripts/slurm/cluster.sh — a one-node test cluster. Do not edit; edit the script.
ClusterName=adatp-ci
# Accepted even though the machine's hostname differs (slurmd is started with -N localhost).
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
# root everywhere: no ownership problems with the state dirs, and slurmd must be root to start jobs as any user.
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Our private munge socket. cred_expire (default 120 s) is ALSO how long a requeued job is held (Reason=BeginTime)
# before it may start again; 10 s keeps requeue tests short. Only takes effect on a slurmctld (re)start.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=$CRED_EXPIRE
# Wiped on every 'up': a DRAIN state would otherwise survive restarts through it.
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/slurmd-%n
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: plain /proc process tracking, no task containment (works in VMs and containers alike).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# No accounting daemon (slurmdbd/MariaDB). Consequence: the real sacct does not work -> bin/sacct stand-in.
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
# Schedule by cores: with N CPUs, N one-CPU jobs run at once. Memory is not a consumable resource (not enforced).
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Default intervals are 30 s/60 s: a job that becomes eligible (e.g. after a requeue hold) could wait that long.
SchedulerParameters=bf_interval=2,sched_interval=2
# Silences "Configured MailProg is invalid"; no mail is ever sent.
MailProg=$(command -v true)
# A node that was DOWN comes back by itself once slurmd registers with a valid configuration.
ReturnToService=2
# Keep finished jobs in slurmctld's memory for an hour: the sacct stand-in reads their final state via squeue.
MinJobAge=3600
KillWait=5
InactiveLimit=0
Waittime=0
PlugStackConfig=$ETC/plugstack.conf
$gres_types
$node
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

port_in_use() { # port_in_use <port>
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

cmd_up() {
  ensure_root
  mkdir -p "$BASE" "$LOG"
  ensure_packages

  if is_up && [[ "$(cat "$SETTINGS")" == "$(settings_fingerprint)" ]]; then
    write_env_file
    log "already up ($(settings_fingerprint)); env: source $ENV_FILE"
    return 0
  fi
  local t0
  t0="$(now)"
  # Anything half-started (or a cluster with other settings) is stopped first, so 'up' always starts from scratch.
  stop_daemons quiet

  for p in "$CTLD_PORT" "$SLURMD_PORT"; do
    port_in_use "$p" && die "port $p is in use by another process (another cluster?); set ADATP_SLURM_PORT"
  done

  # State and spool are wiped on every start (a DRAIN state and old jobs would survive otherwise); logs are truncated.
  rm -rf "$BASE/state" "$BASE/spool"
  # spool/slurmd-localhost is pre-created to silence a harmless "Domain socket directory" log line.
  mkdir -p "$ETC" "$LOG" "$BASE/state" "$BASE/spool/slurmd-localhost" "$RUN/munge" "$MUNGE_DIR" "$BASE/bin"
  : >"$LOG/slurmctld.log"
  : >"$LOG/slurmd-localhost.log"

  install -m 0755 "$HERE/sacct" "$BASE/bin/sacct"
  start_munge
  write_slurm_conf
  settings_fingerprint >"$SETTINGS"
  write_env_file

  # Both daemonise. -N localhost: our NodeName is not the machine's hostname. 9>&-: see start_munge.
  slurmctld -f "$SLURM_CONF" 9>&- || { diagnostics; die "slurmctld failed to start"; }
  slurmd -f "$SLURM_CONF" -N localhost 9>&- || { diagnostics; die "slurmd failed to start"; }

  local deadline state=""
  deadline=$(($(date +%s) + UP_TIMEOUT))
  while (($(date +%s) < deadline)); do
    state="$(node_state)"
    [[ "$state" == idle ]] && break
    sleep 0.2
  done
  if [[ "$state" != idle ]]; then
    diagnostics
    stop_daemons quiet
    die "node not idle after ${UP_TIMEOUT}s (last state: '${state:-no answer}')"
  fi
  # Smoke test: one job step through the whole chain (munge credential, slurmctld allocation, slurmd launch).
  if ! timeout 30 srun -N1 -n1 -t 1 true; then
    diagnostics
    stop_daemons quiet
    die "smoke test 'srun true' failed"
  fi
  log "up in $(since "$t0") s: partition '$PARTITION', $(sinfo -h -o '%c CPUs, %m MB, gres %G' | head -n 1)"
  log "clients need: source $ENV_FILE   (or: eval \"\$($0 env)\")"
}

# ------------------------------------------------------------------------------------------------------------------- down
wait_pid_gone() { # wait_pid_gone <pid> <seconds>
  local pid="$1" i
  for ((i = 0; i < $2 * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

stop_pidfile() { # stop_pidfile <pidfile> <name>: TERM, wait, then KILL — only the pid we started (from its pid file)
  local pid
  [[ -s "$1" ]] || return 0
  pid="$(cat "$1")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 10 || { log "$2 ($pid) ignored SIGTERM; killing"; kill -KILL "$pid" 2>/dev/null || true; }
  fi
  rm -f "$1"
}

stop_daemons() { # stop_daemons [quiet]
  local quiet="${1:-}" ctld_pid="" slurmd_pid=""
  pid_alive "$CTLD_PID" && ctld_pid="$(cat "$CTLD_PID")"
  pid_alive "$SLURMD_PID" && slurmd_pid="$(cat "$SLURMD_PID")"
  if [[ -n "$ctld_pid" && -f "$SLURM_CONF" ]]; then
    # Cancel leftover jobs first so no job step outlives the daemons, and give them KillWait (5 s) + a bit to go.
    local jobs
    jobs="$(timeout 10 squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ' || true)"
    if [[ -n "${jobs// /}" ]]; then
      [[ -n "$quiet" ]] || log "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      timeout 10 scancel $jobs 2>/dev/null || true
      local i
      for ((i = 0; i < 80; i++)); do
        [[ -z "$(timeout 10 squeue -h -t RUNNING,COMPLETING,PENDING -o '%A' 2>/dev/null || true)" ]] && break
        sleep 0.1
      done
    fi
    # Stops slurmctld AND every slurmd cleanly.
    timeout 10 scontrol shutdown >/dev/null 2>&1 || true
  fi
  [[ -n "$ctld_pid" ]] && { wait_pid_gone "$ctld_pid" 15 || true; }
  [[ -n "$slurmd_pid" ]] && { wait_pid_gone "$slurmd_pid" 15 || true; }
  # Whatever did not stop (or a daemon without a controller) is signalled through its own pid file.
  stop_pidfile "$CTLD_PID" slurmctld
  stop_pidfile "$SLURMD_PID" slurmd
  if pid_alive "$MUNGE_PID"; then
    munged --stop --socket="$MUNGE_SOCKET" >/dev/null 2>&1 || true
    stop_pidfile "$MUNGE_PID" munged
  fi
  rm -f "$MUNGE_PID"
}

cmd_down() {
  if [[ ! -d "$BASE" ]]; then
    log "nothing to stop (no $BASE)"
    return 0
  fi
  if [[ "$(id -u)" != 0 ]] && { pid_alive "$CTLD_PID" || pid_alive "$MUNGE_PID"; }; then
    die "the cluster under $BASE runs as root; run 'down' as root"
  fi
  local t0
  t0="$(now)"
  stop_daemons
  log "down in $(since "$t0") s (logs kept in $LOG)"
}

# ----------------------------------------------------------------------------------------------------------------- status
cmd_status() {
  local d
  for d in munged:"$MUNGE_PID" slurmctld:"$CTLD_PID" slurmd:"$SLURMD_PID"; do
    if pid_alive "${d#*:}"; then echo "${d%%:*}: running (pid $(cat "${d#*:}"))"; else echo "${d%%:*}: stopped"; fi
  done
  if is_up; then
    echo "settings: $(cat "$SETTINGS")"
    echo "env: source $ENV_FILE"
    timeout 10 sinfo -N -o '%N %P %T %c %m %G' || true
    timeout 10 squeue --states=all -o '%i %j %T %M %R' || true
    return 0
  fi
  echo "cluster under $BASE is down"
  return 3
}

cmd_env() {
  [[ -f "$ENV_FILE" ]] || die "no $ENV_FILE; run '$0 up' first"
  cat "$ENV_FILE"
}

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[[ $# -eq 1 ]] || usage
case "$1" in
  up | down)
    [[ "$1" == up ]] && ensure_root
    [[ -d "$BASE" || "$1" == up ]] || { log "nothing to stop (no $BASE)"; exit 0; }
    # One up/down at a time for this base directory (e.g. two pytest-xdist workers sharing the cluster).
    mkdir -p "$BASE"
    exec 9>"$BASE/.cluster.lock"
    if command -v flock >/dev/null 2>&1; then
      flock -w 600 9 || die "another 'cluster.sh up/down' on $BASE held the lock for 600 s"
    fi
    "cmd_$1"
    ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) usage ;;
esac
