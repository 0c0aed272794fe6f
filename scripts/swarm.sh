#!/usr/bin/env bash
# Ensure a two-node Docker Swarm on this machine for the swarm tests, beside the
# engines of scripts/engine.sh and scripts/engines.sh (which starts each dockerd:
# see its header):
#
#   manager  unix://$PULLRUN_STATE_DIR/swarm1/docker.sock, swarm on 127.0.0.1:23770
#   worker   unix://$PULLRUN_STATE_DIR/swarm2/docker.sock, joined as 127.0.0.2
#
# Each is its own dockerd (data root, exec root, pidfile, containerd) with
# --bridge=none --iptables=false --ip-masq=false; log $PULLRUN_STATE_DIR/swarmN.log,
# pidfile swarmN.pid. Nodes carry the label pullrun.node=swarm1 / swarm2 (both
# have this machine's hostname).
#
# Nothing listens beyond 127.0.0.0/8:
#   - `swarm init` always gets --listen-addr (without it the manager listens on
#     0.0.0.0:2377); gossip then binds the advertise address only (:7946).
#   - the routing mesh is removed: the `ingress` network, once a task runs,
#     makes a kernel VXLAN socket on 0.0.0.0:4789 (UDP) and a docker_gwbridge
#     bridge with a 172.x address on the host. Runs need neither (no published
#     ports; a task with no network gets only `lo`, as with --bridge=none).
# The script checks the listeners of both dockerds with `ss` and fails otherwise.
#
# Idempotent: a running swarm and a joined worker are reused; a worker whose
# swarm is gone (the manager's state was reset) leaves it and joins again.
# The swarm's state lives in the data roots: stop + start keeps it.
#
#   scripts/swarm.sh [start]   ensure the manager, then the worker
#                              (PULLRUN_SWARM_WORKER=0: the manager alone)
#   scripts/swarm.sh stop      stop both dockerds (the ones these scripts started)
#   scripts/swarm.sh env       export lines for the tests (scripts/test-env.sh)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MANAGER_PORT=${PULLRUN_SWARM_PORT:-23770}
WORKER_ADDR=${PULLRUN_SWARM_WORKER_ADDR:-127.0.0.2}
WORKER_PORT=${PULLRUN_SWARM_WORKER_PORT:-23771} # stored by the worker, not listened on
WITH_WORKER=${PULLRUN_SWARM_WORKER:-1}
ENGINE_SH="$PULLRUN_SCRIPTS_DIR/engine.sh"
MANAGER=swarm1
WORKER=swarm2

sock_of() { echo "$PULLRUN_STATE_DIR/$1/docker.sock"; }
on() { # on NAME DOCKER_ARGS...: the docker CLI on that engine
  local n=$1
  shift
  DOCKER_HOST="unix://$(sock_of "$n")" timeout 60 docker "$@"
}
engine_env() { # engine_env NAME [ARGS]: scripts/engine.sh for that engine
  local n=$1
  shift
  DOCKER_HOST="unix://$(sock_of "$n")" PULLRUN_ENGINE_NAME="$n" "$ENGINE_SH" "$@"
}
node_state() { on "$1" info --format '{{.Swarm.LocalNodeState}}'; }
node_id() { on "$1" info --format '{{.Swarm.NodeID}}'; }

env_lines() {
  local k v
  {
    echo "PULLRUN_TEST_SWARM_HOST unix://$(sock_of $MANAGER)"
    echo "PULLRUN_TEST_SWARM_PIDFILE $PULLRUN_STATE_DIR/$MANAGER.pid"
    if [[ "$WITH_WORKER" != 0 ]]; then
      echo "PULLRUN_TEST_SWARM_WORKER_HOST unix://$(sock_of $WORKER)"
      echo "PULLRUN_TEST_SWARM_WORKER_PIDFILE $PULLRUN_STATE_DIR/$WORKER.pid"
    fi
    echo "PULLRUN_TEST_SWARM_SCRIPT $PULLRUN_SCRIPTS_DIR/swarm.sh"
  } | while read -r k v; do
    printf 'export %s=%q\n' "$k" "$v"
  done
}

# label_node ENGINE: the node of that engine is labelled pullrun.node=ENGINE and
# takes tasks (availability active; a test may have drained it)
label_node() {
  local n=$1 id
  id="$(node_id "$n")"
  if [[ "$(on $MANAGER node inspect --format '{{index .Spec.Labels "pullrun.node"}} {{.Spec.Availability}}' "$id")" != "$n active" ]]; then
    on $MANAGER node update --label-add "pullrun.node=$n" --availability active "$id" >/dev/null
  fi
}

# The routing mesh: see the header. `ingress` is removed once, on the manager;
# swarmkit does not make it again (not at a restart either). But a node that
# got it before its removal reached it builds (and later tears down) an ingress
# sandbox, VXLAN socket and docker_gwbridge on its own, a moment later: after an
# init, a join or a removal (SETTLE=1) wait until none is left and 2 s pass
# quietly; else one look.
SETTLE=0
no_ingress() {
  local out
  on $MANAGER network inspect ingress >/dev/null 2>&1 || return 0
  # (inspect may still see the node's own copy of a network already removed)
  if out="$(printf 'y\n' | on $MANAGER network rm ingress 2>&1)"; then
    log "removed the swarm's ingress network (routing mesh: VXLAN on 0.0.0.0:4789)"
  elif [[ "$out" != *"not found"* ]]; then
    die "cannot remove the swarm's ingress network: $out"
  fi
  SETTLE=1
}
no_routing_mesh() { # no_routing_mesh ENGINE...
  local n i busy quiet=0
  no_ingress
  for ((i = 0; i < 150; i++)); do
    busy=0
    for n in "$@"; do
      if on "$n" network inspect docker_gwbridge >/dev/null 2>&1; then
        busy=1 # the ingress sandbox may still be on it for a moment
        on "$n" network rm docker_gwbridge >/dev/null 2>&1 && log "$n: removed docker_gwbridge"
      fi
    done
    [[ -z "$(ss -lunH 'sport = :4789')" ]] || busy=1
    if ((busy)); then quiet=0; else quiet=$((quiet + 1)); fi
    if ((!SETTLE && quiet)) || ((quiet >= 10)); then
      # a bridge made by an earlier dockerd of these (killed while it had it) is
      # adopted by the next one, and not deleted with the network
      if ip link show docker_gwbridge >/dev/null 2>&1; then
        log "WARNING: a docker_gwbridge link is left on the host, no engine of the swarm has it: ip link del docker_gwbridge"
      fi
      return 0
    fi
    sleep 0.2
  done
  die "the routing mesh does not go away (docker_gwbridge, or UDP :4789: $(ss -lunH 'sport = :4789'))"
}

start_manager() {
  engine_env $MANAGER
  local state
  state="$(node_state $MANAGER)"
  case "$state" in
    active)
      [[ "$(on $MANAGER info --format '{{.Swarm.ControlAvailable}}')" == true ]] \
        || die "$MANAGER is in a swarm but not as a manager; leave it: DOCKER_HOST=unix://$(sock_of $MANAGER) docker swarm leave --force"
      log "reusing the swarm of $MANAGER (node $(node_id $MANAGER))"
      ;;
    inactive | error)
      if [[ "$state" == error ]]; then
        log "$MANAGER's swarm is in error ($(on $MANAGER info --format '{{.Swarm.Error}}')): leaving it"
        on $MANAGER swarm leave --force >/dev/null
      fi
      log "swarm init on $MANAGER: --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:$MANAGER_PORT"
      on $MANAGER swarm init --advertise-addr 127.0.0.1 --listen-addr "127.0.0.1:$MANAGER_PORT" \
        --data-path-addr 127.0.0.1 >/dev/null
      SETTLE=1
      ;;
    *) die "$MANAGER's swarm state is '$state' (see $PULLRUN_STATE_DIR/$MANAGER.log)" ;;
  esac
  no_ingress # before any worker joins: it would build the mesh at once
  label_node $MANAGER
}

# true if the manager knows the worker's node and sees it ready (waits up to 20 s)
worker_ready() {
  local id=$1 i st
  for ((i = 0; i < 100; i++)); do
    st="$(on $MANAGER node inspect --format '{{.Status.State}}' "$id" 2>/dev/null)" || return 1
    [[ "$st" == ready ]] && return 0
    sleep 0.2
  done
  return 1
}

start_worker() {
  engine_env $WORKER
  local state id i
  state="$(node_state $WORKER)"
  for ((i = 0; i < 100; i++)); do
    [[ "$state" == pending ]] || break # pending: still connecting
    sleep 0.2
    state="$(node_state $WORKER)"
  done
  if [[ "$state" == active ]]; then
    id="$(node_id $WORKER)"
    if [[ "$(on $WORKER info --format '{{.Swarm.ControlAvailable}}')" != true ]] && worker_ready "$id"; then
      log "reusing $WORKER, a worker of the swarm (node $id)"
      label_node $WORKER
      return 0
    fi
    log "$WORKER is in a swarm that is not $MANAGER's (or not ready in it): leaving it"
  fi
  if [[ "$state" != inactive ]]; then
    on $WORKER swarm leave --force >/dev/null 2>&1 || true
  fi
  local token old
  token="$(on $MANAGER swarm join-token -q worker)"
  log "swarm join on $WORKER: --advertise-addr $WORKER_ADDR --listen-addr $WORKER_ADDR:$WORKER_PORT --data-path-addr $WORKER_ADDR"
  on $WORKER swarm join --token "$token" --advertise-addr "$WORKER_ADDR" \
    --listen-addr "$WORKER_ADDR:$WORKER_PORT" --data-path-addr "$WORKER_ADDR" \
    "127.0.0.1:$MANAGER_PORT" >/dev/null
  id="$(node_id $WORKER)"
  worker_ready "$id" || die "$WORKER joined but the manager does not see node $id ready"
  SETTLE=1
  # the nodes of earlier joins of this worker, now down for good
  for old in $(on $MANAGER node ls -q --filter "node.label=pullrun.node=$WORKER"); do
    if [[ "$old" != "$id" ]]; then
      log "removing $old, an earlier node of $WORKER"
      on $MANAGER node rm --force "$old" >/dev/null
    fi
  done
  label_node $WORKER
}

# Every socket of our dockerds is on 127.0.0.0/8 (or a unix socket), and no VXLAN
# socket is open.
check_listeners() {
  local n pid bad=""
  for n in "$@"; do
    pid="$(cat "$PULLRUN_STATE_DIR/$n/docker.pid" 2>/dev/null)" || continue
    bad+="$(ss -ltunpH | awk -v p="pid=$pid," 'index($0, p) && $5 !~ /^127\./ { print "  " $0 }')"
  done
  bad+="$(ss -lunH 'sport = :4789' | awk '{ print "  " $0 }')"
  [[ -z "$bad" ]] || die "listening beyond 127.0.0.0/8:"$'\n'"$bad"
}

action=start
case "${1:-}" in
  start | stop | env)
    action=$1
    shift
    ;;
esac
[[ $# -eq 0 ]] || die "usage: $0 [start|stop|env]"

case "$action" in
  env) env_lines ;;
  stop)
    for n in $WORKER $MANAGER; do
      # a bridge of ours would outlive its dockerd (see no_routing_mesh)
      if on "$n" network inspect docker_gwbridge >/dev/null 2>&1; then
        on "$n" network rm docker_gwbridge >/dev/null 2>&1 || true
      fi
      engine_env "$n" stop
    done
    ;;
  start)
    command -v dockerd >/dev/null 2>&1 || die "no dockerd: run scripts/engine.sh first (it installs docker.io)"
    begin=$(date +%s%N)
    start_manager
    nodes=("$MANAGER")
    if [[ "$WITH_WORKER" != 0 ]]; then
      start_worker
      nodes+=("$WORKER")
    fi
    no_routing_mesh "${nodes[@]}"
    check_listeners "${nodes[@]}"
    log "swarm ready (${nodes[*]}) on 127.0.0.1:$MANAGER_PORT in $((($(date +%s%N) - begin) / 1000000)) ms"
    ;;
esac
