#!/usr/bin/env bash
# Ensure a Docker engine answers.
#
#   1. If `docker version` reaches a daemon (DOCKER_HOST or the default socket),
#      reuse it.
#   2. Otherwise, on Debian as root: install docker.io if dockerd is missing, and
#      start `dockerd --bridge=none --iptables=false --ip-masq=false` in the
#      background (log and pidfile under $PULLRUN_STATE_DIR/dockerd*), waiting up
#      to 60 s for it to answer.
#   3. Otherwise exit non-zero with an explanation.
#
# With DOCKER_HOST=unix:///some/other.sock a separate engine is started on that
# socket, with its own data and exec roots under the state dir (handy for trying
# this script next to a running engine). A tcp:// DOCKER_HOST is only reused,
# never started. Idempotent: safe to run any number of times.
#
# Such a separate engine is named PULLRUN_ENGINE_NAME (default dockerd-HASH of
# the socket): log $PULLRUN_STATE_DIR/NAME.log, pidfile NAME.pid, data, exec
# root and dockerd's own pidfile under NAME/. Arguments after `--` are added
# to its dockerd (scripts/engines.sh adds a TLS tcp:// listener that way).
#
#   scripts/engine.sh [-- DOCKERD_ARGS...]
#   scripts/engine.sh stop   stops the dockerd this script started (its pidfile),
#                            never one started some other way
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WAIT_SECS=${PULLRUN_ENGINE_WAIT:-60}

engine_version() {
  command -v docker >/dev/null 2>&1 || return 1
  timeout 20 docker version --format '{{.Server.Version}}' 2>/dev/null
}

where() { echo "${DOCKER_HOST:-unix:///var/run/docker.sock}"; }

sock=/var/run/docker.sock
if [[ "${DOCKER_HOST:-}" == unix://* ]]; then
  sock="${DOCKER_HOST#unix://}"
fi
if [[ "$sock" == /var/run/docker.sock || "$sock" == /run/docker.sock ]]; then
  name=dockerd
else
  name="${PULLRUN_ENGINE_NAME:-dockerd-$(printf '%s' "$sock" | md5sum | cut -c1-8)}"
fi
pidfile="$PULLRUN_STATE_DIR/$name.pid"
logfile="$PULLRUN_STATE_DIR/$name.log"

if [[ "${1:-}" == stop ]]; then
  [[ $# -eq 1 ]] || die "usage: $0 stop"
  if pid_alive "$pidfile" dockerd; then
    pid="$(cat "$pidfile")"
    log "stopping dockerd pid $pid (started by this script)"
    kill "$pid"
    for ((i = 0; i < 300; i++)); do
      pid_alive "$pidfile" dockerd || break
      sleep 0.1
    done
    pid_alive "$pidfile" dockerd && die "dockerd pid $pid still running after 30s"
  else
    log "no dockerd started by this script is running"
  fi
  rm -f "$pidfile"
  exit 0
fi
extra=()
if [[ "${1:-}" == -- ]]; then
  shift
  extra=("$@")
  set --
fi
[[ $# -eq 0 ]] || die "usage: $0 [stop | -- DOCKERD_ARGS...]"
if ((${#extra[@]})) && [[ "$name" == dockerd ]]; then
  die "extra dockerd arguments are for a separate engine (DOCKER_HOST=unix:///other.sock) only"
fi

if v="$(engine_version)" && [[ -n "$v" ]]; then
  log "reusing the Docker engine that answers at $(where) (server $v)"
  exit 0
fi

# --- nothing answers: start our own -------------------------------------------
if [[ -n "${DOCKER_HOST:-}" && "$DOCKER_HOST" != unix://* ]]; then
  die "DOCKER_HOST=$DOCKER_HOST does not answer, and only a unix:// engine can be started here"
fi

is_root || die "no Docker engine answers at $(where), and starting one needs root"
is_debian || die "no Docker engine answers at $(where), and this is not Debian: install and start Docker yourself"

if ! command -v dockerd >/dev/null 2>&1; then
  apt_install docker.io
fi
command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after installing docker.io"
command -v docker >/dev/null 2>&1 || die "docker CLI missing after installing docker.io"

# dockerd needs cgroups; without systemd nobody may have mounted them.
if ! awk '$3 == "cgroup" || $3 == "cgroup2" { found = 1 } END { exit !found }' /proc/mounts; then
  apt_install cgroupfs-mount
  log "mounting cgroups with cgroupfs-mount"
  cgroupfs-mount >&2 || die "cgroupfs-mount failed"
fi

args=(--bridge=none --iptables=false --ip-masq=false)
if [[ "$name" == dockerd ]]; then
  own_pidfile=/var/run/docker.pid # dockerd's own, default location
  exec_root=/var/run/docker
else
  # A second engine beside the default one: keep everything apart.
  mkdir -p "$PULLRUN_STATE_DIR/$name/data" "$PULLRUN_STATE_DIR/$name/exec" "$(dirname "$sock")"
  own_pidfile="$PULLRUN_STATE_DIR/$name/docker.pid"
  exec_root="$PULLRUN_STATE_DIR/$name/exec"
  args+=(-H "unix://$sock" --data-root "$PULLRUN_STATE_DIR/$name/data"
    --exec-root "$PULLRUN_STATE_DIR/$name/exec" --pidfile "$own_pidfile" "${extra[@]}")
fi

wait_engine() { # wait_engine PID PIDFILE: 0 = answers, 1 = PID died, 2 = timeout
  local pid=$1 pf=$2 i
  for ((i = 0; i < WAIT_SECS * 10; i++)); do
    if v="$(engine_version)" && [[ -n "$v" ]]; then
      return 0
    fi
    pid_alive "$pf" dockerd || return 1
    sleep 0.1
  done
  return 2
}

# A dockerd that we (or someone) started may still be coming up: wait for it
# rather than start a second one on the same socket.
for pf in "$pidfile" "$own_pidfile"; do
  if pid_alive "$pf" dockerd; then
    pid="$(cat "$pf")"
    log "dockerd pid $pid ($pf) is running but not answering yet; waiting up to ${WAIT_SECS}s"
    rc=0
    wait_engine "$pid" "$pf" || rc=$?
    if ((rc == 0)); then
      log "Docker engine at $(where) answers (server $v, dockerd pid $pid)"
      exit 0
    elif ((rc == 2)); then
      die "dockerd pid $pid does not answer at $(where); see $logfile (or stop it and re-run)"
    fi
    log "dockerd pid $pid exited while we waited; starting a new one"
  fi
done

# Stale pidfiles left by a killed dockerd would block the start: dockerd refuses
# to start over its own, and waits for a "still running" containerd whose pid
# may be a zombie or, after a restart, some unrelated process.
if [[ -e "$own_pidfile" ]]; then
  log "removing stale $own_pidfile"
  rm -f "$own_pidfile"
fi
ctr_pidfile="$exec_root/containerd/containerd.pid"
if [[ -e "$ctr_pidfile" ]] && ! pid_alive "$ctr_pidfile" containerd; then
  log "removing stale $ctr_pidfile"
  rm -f "$ctr_pidfile"
fi

log "no engine answers at $(where): starting dockerd ${args[*]} (log $logfile)"
printf '\n==== %s starting dockerd %s\n' "$(date -Is)" "${args[*]}" >>"$logfile"
# setsid: own session, so it survives the caller's terminal and process group.
setsid dockerd "${args[@]}" </dev/null >>"$logfile" 2>&1 &
pid=$!
echo "$pid" >"$pidfile"

rc=0
wait_engine "$pid" "$pidfile" || rc=$?
if ((rc == 0)); then
  log "started dockerd pid $pid; engine answers at $(where) (server $v)"
  exit 0
fi
log "dockerd did not come up; last lines of $logfile:"
tail -n 20 "$logfile" >&2 || true
if ((rc == 2)); then
  die "dockerd pid $pid is running but not answering (left running; see $logfile)"
fi
rm -f "$pidfile"
die "dockerd exited"
