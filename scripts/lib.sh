# shellcheck shell=bash
# Shared helpers for the pullrun provisioning scripts. Sourced, not executed.
#
# Everything these scripts start listens on 127.0.0.1 only. State (logs, pidfiles,
# registry storage, image build contexts) lives under PULLRUN_STATE_DIR, default
# /var/lib/pullrun-dev when running as root.

PULLRUN_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -z "${PULLRUN_STATE_DIR:-}" ]]; then
  if [[ "$(id -u)" == 0 ]]; then
    PULLRUN_STATE_DIR=/var/lib/pullrun-dev
  else
    PULLRUN_STATE_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/pullrun-dev"
  fi
fi
export PULLRUN_STATE_DIR
mkdir -p "$PULLRUN_STATE_DIR"

# Never let a proxy from the environment get between us and loopback services.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

_pr_tag="$(basename "$0" .sh)"
log() { printf '[%s] %s\n' "$_pr_tag" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$_pr_tag" "$*" >&2; exit 1; }

is_root() { [[ "$(id -u)" == 0 ]]; }
is_debian() { [[ -r /etc/debian_version ]] && command -v apt-get >/dev/null 2>&1; }

# apt_install PKG... : install the Debian packages that are not installed yet.
# Runs `apt-get update` only when a package has no install candidate (empty or
# stale lists), so a warm machine never touches the network.
apt_install() {
  local missing=() p
  for p in "$@"; do
    # (no `| grep -q` on these: with pipefail, grep's early exit fails the pipe)
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != *"install ok installed"* ]]; then
      missing+=("$p")
    fi
  done
  ((${#missing[@]} == 0)) && return 0
  is_root || die "need Debian packages: ${missing[*]} (run as root, or install them yourself)"
  is_debian || die "need packages ${missing[*]}, but this is not a Debian system with apt-get"
  local need_update=0
  for p in "${missing[@]}"; do
    if [[ "$(apt-cache policy "$p" 2>/dev/null || true)" != *"Candidate: "[0-9]* ]]; then
      need_update=1
    fi
  done
  local aptlog="$PULLRUN_STATE_DIR/apt.log"
  if ((need_update)); then
    log "apt-get update (log $aptlog)"
    apt-get update -q >>"$aptlog" 2>&1 || { tail -n 30 "$aptlog" >&2; die "apt-get update failed"; }
  fi
  # Packages must not start their services (docker.io's init script would start a
  # dockerd with default bridge networking, docker-registry one on *:5000): the
  # scripts start what they need themselves. A policy-rc.d saying 101 ("action
  # forbidden") does that; one already in place is left alone.
  local policy=/usr/sbin/policy-rc.d added_policy=0 rc=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\n# temporary, from pullrun scripts/lib.sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added_policy=1
  fi
  log "apt-get install ${missing[*]} (log $aptlog)"
  DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
    apt-get install -y -q "${missing[@]}" </dev/null >>"$aptlog" 2>&1 || rc=$?
  ((added_policy)) && rm -f "$policy"
  if ((rc != 0)); then
    tail -n 30 "$aptlog" >&2
    die "apt-get install ${missing[*]} failed"
  fi
}

# pid_alive PIDFILE [COMM]: true if the pidfile names a live process (whose
# /proc/PID/comm equals COMM, when given).
pid_alive() {
  local pidfile=$1 comm=${2:-} pid
  [[ -s "$pidfile" ]] || return 1
  pid="$(cat "$pidfile" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # a zombie (killed, not reaped yet) is not alive
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
  if [[ -n "$comm" ]]; then
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]] || return 1
  fi
  return 0
}

# http_code URL [curl args...]: print the HTTP status (000 when nothing answers).
http_code() {
  local url=$1
  shift
  curl -s -o /dev/null -w '%{http_code}' --noproxy '*' --max-time 5 "$@" "$url" 2>/dev/null \
    || true
}
