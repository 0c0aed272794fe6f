#!/usr/bin/env bash
# Ensure the two extra Docker engines that the tests place runs on, beside the
# default one of scripts/engine.sh (which starts each of them: see its header):
#
#   engine 2  unix://$PULLRUN_STATE_DIR/engine2/docker.sock
#   engine 3  tcp://127.0.0.1:23760 with TLS (client certificate required), and
#             unix://$PULLRUN_STATE_DIR/engine3/docker.sock for local admin
#
# Each is its own dockerd (data root, exec root, pidfile, containerd) with
# --bridge=none --iptables=false --ip-masq=false; log $PULLRUN_STATE_DIR/engineN.log,
# pidfile engineN.pid. Engine 3's CA, server and client certificates are made
# with openssl under $PULLRUN_STATE_DIR/engine3/tls/{ca,server,client} (keys 0600)
# and kept while valid. Nothing listens beyond 127.0.0.1. Idempotent.
#
#   scripts/engines.sh [start] [2] [3]   ensure them (default: both, in parallel)
#   scripts/engines.sh stop [2] [3]      stop the ones these scripts started
#   scripts/engines.sh env               export lines for the tests (scripts/test-env.sh)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ENGINE3_PORT=${PULLRUN_ENGINE3_PORT:-23760}
TLS="$PULLRUN_STATE_DIR/engine3/tls"
ENGINE_SH="$PULLRUN_SCRIPTS_DIR/engine.sh"

sock_of() { echo "$PULLRUN_STATE_DIR/engine$1/docker.sock"; }

env_lines() {
  local k v
  while read -r k v; do
    printf 'export %s=%q\n' "$k" "$v"
  done <<EOF
PULLRUN_TEST_ENGINE2_HOST unix://$(sock_of 2)
PULLRUN_TEST_ENGINE2_PIDFILE $PULLRUN_STATE_DIR/engine2.pid
PULLRUN_TEST_ENGINE3_HOST tcp://127.0.0.1:$ENGINE3_PORT
PULLRUN_TEST_ENGINE3_ADMIN_HOST unix://$(sock_of 3)
PULLRUN_TEST_ENGINE3_TLS_DIR $TLS/client
PULLRUN_TEST_ENGINE3_PIDFILE $PULLRUN_STATE_DIR/engine3.pid
PULLRUN_TEST_ENGINES_SCRIPT $PULLRUN_SCRIPTS_DIR/engines.sh
EOF
}

# --- engine 3's certificates ------------------------------------------------------
certs_ok() {
  local f
  for f in ca/ca.pem ca/ca-key.pem server/ca.pem server/server-cert.pem server/server-key.pem \
    client/ca.pem client/cert.pem client/key.pem; do
    [[ -s "$TLS/$f" ]] || return 1
  done
  for f in ca/ca.pem server/server-cert.pem client/cert.pem; do # valid for 30 more days
    openssl x509 -noout -checkend 2592000 -in "$TLS/$f" >/dev/null 2>&1 || return 1
  done
  openssl verify -CAfile "$TLS/ca/ca.pem" -purpose sslserver "$TLS/server/server-cert.pem" \
    >/dev/null 2>&1 || return 1
  openssl verify -CAfile "$TLS/ca/ca.pem" -purpose sslclient "$TLS/client/cert.pem" \
    >/dev/null 2>&1 || return 1
}

# sign NAME CN EXTENSIONS: key NAME-key.pem and certificate NAME-cert.pem in the
# current directory, signed by ca/.
sign() {
  local name=$1 cn=$2 ext=$3
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$name-key.pem" -subj "/CN=$cn" -out "$name.csr" 2>/dev/null
  printf '%s\n' "$ext" \
    "keyUsage = critical, digitalSignature" \
    "basicConstraints = critical, CA:FALSE" \
    "subjectKeyIdentifier = hash" \
    "authorityKeyIdentifier = keyid, issuer" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca/ca.pem -CAkey ca/ca-key.pem -CAcreateserial \
    -days 3650 -sha256 -extfile "$name.ext" -out "$name-cert.pem" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

make_certs() {
  local tmp
  mkdir -p "$PULLRUN_STATE_DIR/engine3"
  tmp="$(mktemp -d "$PULLRUN_STATE_DIR/engine3/tls.XXXXXX")"
  (
    umask 077
    cd "$tmp"
    mkdir ca server client
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -keyout ca/ca-key.pem -out ca/ca.pem -days 3650 -sha256 -subj "/CN=pullrun test CA" \
      -addext "basicConstraints = critical, CA:TRUE" \
      -addext "keyUsage = critical, keyCertSign, cRLSign" \
      -addext "subjectKeyIdentifier = hash" 2>/dev/null
    sign server localhost "$(printf '%s\n' \
      "subjectAltName = IP:127.0.0.1, DNS:localhost" "extendedKeyUsage = serverAuth")"
    sign client pullrun-client "extendedKeyUsage = clientAuth"
    mv server-cert.pem server-key.pem server/
    mv client-cert.pem client/cert.pem
    mv client-key.pem client/key.pem
    cp ca/ca.pem server/ca.pem
    cp ca/ca.pem client/ca.pem
    rm -f ca/ca.srl
    chmod 600 ./*/*.pem
    chmod 644 ./*/ca.pem server/server-cert.pem client/cert.pem
  ) || {
    rm -rf "$tmp"
    die "openssl could not make engine 3's certificates"
  }
  rm -rf "$TLS"
  mv "$tmp" "$TLS"
  chmod 700 "$TLS"
}

# --- engines ------------------------------------------------------------------------
engine_env() { # run engine.sh for engine N
  local n=$1
  shift
  DOCKER_HOST="unix://$(sock_of "$n")" PULLRUN_ENGINE_NAME="engine$n" "$ENGINE_SH" "$@"
}

tls_docker() { # the docker CLI on engine 3's TLS listener, with the client certificate
  DOCKER_HOST="tcp://127.0.0.1:$ENGINE3_PORT" DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH="$TLS/client" \
    timeout 20 docker "$@"
}

tls_answers() { [[ -n "$(tls_docker version --format '{{.Server.Version}}' 2>/dev/null)" ]]; }

# Refuses a client without a certificate: no plain HTTP, no anonymous TLS.
tls_refuses_strangers() {
  [[ "$(http_code "http://127.0.0.1:$ENGINE3_PORT/_ping")" != 200 ]] \
    && [[ "$(http_code "https://127.0.0.1:$ENGINE3_PORT/_ping" --cacert "$TLS/client/ca.pem")" != 200 ]]
}

start2() { engine_env 2; }

start3() {
  local fresh=0
  if ! certs_ok; then
    log "making engine 3's CA, server and client certificates (openssl, $TLS)"
    make_certs
    fresh=1
  fi
  if ((fresh)) && pid_alive "$PULLRUN_STATE_DIR/engine3.pid" dockerd; then
    log "engine 3 runs with certificates that are gone: restarting it"
    engine_env 3 stop
  fi
  local args=(-H "tcp://127.0.0.1:$ENGINE3_PORT" --tlsverify
    --tlscacert "$TLS/server/ca.pem" --tlscert "$TLS/server/server-cert.pem"
    --tlskey "$TLS/server/server-key.pem")
  engine_env 3 -- "${args[@]}"
  if ! tls_answers; then
    pid_alive "$PULLRUN_STATE_DIR/engine3.pid" dockerd \
      || die "engine 3 answers on its socket but not on tcp://127.0.0.1:$ENGINE3_PORT with TLS, and it was not started by these scripts"
    log "engine 3 does not answer with TLS on 127.0.0.1:$ENGINE3_PORT: restarting it"
    engine_env 3 stop
    engine_env 3 -- "${args[@]}"
    tls_answers || die "engine 3 does not answer on tcp://127.0.0.1:$ENGINE3_PORT with TLS; see $PULLRUN_STATE_DIR/engine3.log"
  fi
  tls_refuses_strangers || die "engine 3 on 127.0.0.1:$ENGINE3_PORT answers a client without a certificate"
  log "engine 3 answers on tcp://127.0.0.1:$ENGINE3_PORT (TLS, client certificate $TLS/client)"
}

# --- main ---------------------------------------------------------------------------
action=start
case "${1:-}" in
  start | stop | env)
    action=$1
    shift
    ;;
esac
which=("$@")
((${#which[@]})) || which=(2 3)
for n in "${which[@]}"; do
  [[ "$n" == 2 || "$n" == 3 ]] || die "usage: $0 [start|stop|env] [2] [3]"
done

case "$action" in
  env)
    env_lines
    ;;
  stop)
    for n in "${which[@]}"; do engine_env "$n" stop; done
    ;;
  start)
    command -v dockerd >/dev/null 2>&1 || die "no dockerd: run scripts/engine.sh first (it installs docker.io)"
    pkgs=()
    command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
    command -v curl >/dev/null 2>&1 || pkgs+=(curl)
    ((${#pkgs[@]} == 0)) || apt_install "${pkgs[@]}"
    begin=$(date +%s%N)
    pids=()
    for n in "${which[@]}"; do
      "start$n" &
      pids+=($!)
    done
    rc=0
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    ((rc == 0)) || die "an engine did not start (logs: $PULLRUN_STATE_DIR/engine{2,3}.log)"
    log "engines ${which[*]} ready in $((($(date +%s%N) - begin) / 1000000)) ms"
    ;;
esac
