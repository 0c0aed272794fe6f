#!/usr/bin/env bash
# Ensure the local test registries answer on loopback (Debian's docker-registry,
# i.e. distribution 2.8):
#
#   127.0.0.1:5000  plain            samples for `make run` and the tests
#   127.0.0.1:5001  htpasswd auth    user pullrun / password s3cret-pw
#   127.0.0.1:5002  plain, "broken"  images.sh deletes a layer blob from it
#
# A registry already answering on its port is reused (plain ones must answer
# GET /v2/ with 200, the auth one with 401). Otherwise it is started in the
# background with config, storage, log and pidfile under
# $PULLRUN_STATE_DIR/registry-PORT/. Idempotent.
#
#   scripts/registry.sh          ensure all three
#   scripts/registry.sh stop     stop the ones this script started (pidfiles)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

AUTH_USER=pullrun
AUTH_PASSWORD=s3cret-pw

reg_dir() { echo "$PULLRUN_STATE_DIR/registry-$1"; }

stop_all() {
  local port dir pid
  for port in 5000 5001 5002; do
    dir="$(reg_dir "$port")"
    if pid_alive "$dir/registry.pid" docker-registry; then
      pid="$(cat "$dir/registry.pid")"
      log "stopping registry on 127.0.0.1:$port (pid $pid)"
      kill "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/registry.pid"
  done
}

write_config() { # write_config PORT KIND
  local port=$1 kind=$2 dir
  dir="$(reg_dir "$port")"
  mkdir -p "$dir/data"
  {
    cat <<EOF
# Written by scripts/registry.sh; rewritten on every run.
version: 0.1
log:
  level: info
  fields:
    service: pullrun-registry-$port
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  # No blob descriptor cache: on the broken registry a deleted blob must really
  # be gone, and the others do not need one.
http:
  addr: 127.0.0.1:$port
  secret: pullrun-dev-registry-$port
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    if [[ "$kind" == auth ]]; then
      cat <<EOF
auth:
  htpasswd:
    realm: pullrun-test
    path: $dir/htpasswd
EOF
    fi
  } >"$dir/config.yml"
}

ensure_htpasswd() { # ensure_htpasswd PORT
  local file
  file="$(reg_dir "$1")/htpasswd"
  if [[ -s "$file" ]] && htpasswd -vb "$file" "$AUTH_USER" "$AUTH_PASSWORD" >/dev/null 2>&1; then
    return 0
  fi
  log "writing bcrypt htpasswd for user $AUTH_USER"
  htpasswd -Bbn "$AUTH_USER" "$AUTH_PASSWORD" >"$file.tmp"
  mv "$file.tmp" "$file"
}

# What /v2/ must answer: 200 for plain registries, 401 for the auth one.
want_code() { if [[ "$1" == auth ]]; then echo 401; else echo 200; fi; }

ensure_registry() { # ensure_registry PORT KIND
  local port=$1 kind=$2 dir want code pid i
  dir="$(reg_dir "$port")"
  want="$(want_code "$kind")"
  code="$(http_code "http://127.0.0.1:$port/v2/")"
  if [[ "$code" == "$want" ]]; then
    if pid_alive "$dir/registry.pid" docker-registry; then
      log "reusing $kind registry on 127.0.0.1:$port (pid $(cat "$dir/registry.pid"))"
    else
      log "reusing $kind registry on 127.0.0.1:$port (not started by this script)"
    fi
    return 0
  fi
  if [[ "$code" != 000 ]]; then
    die "127.0.0.1:$port answers GET /v2/ with HTTP $code, not $want: something else is on that port"
  fi
  if pid_alive "$dir/registry.pid" docker-registry; then
    die "registry pid $(cat "$dir/registry.pid") for port $port runs but does not answer; see $dir/registry.log"
  fi

  write_config "$port" "$kind"
  [[ "$kind" == auth ]] && ensure_htpasswd "$port"
  log "starting $kind registry on 127.0.0.1:$port (config $dir/config.yml, log $dir/registry.log)"
  setsid docker-registry serve "$dir/config.yml" </dev/null >"$dir/registry.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/registry.pid"
  for ((i = 0; i < 150; i++)); do
    code="$(http_code "http://127.0.0.1:$port/v2/")"
    if [[ "$code" == "$want" ]]; then
      log "registry on 127.0.0.1:$port answers (pid $pid)"
      return 0
    fi
    if ! pid_alive "$dir/registry.pid" docker-registry; then
      tail -n 20 "$dir/registry.log" >&2 || true
      rm -f "$dir/registry.pid"
      die "registry on port $port exited"
    fi
    sleep 0.1
  done
  tail -n 20 "$dir/registry.log" >&2 || true
  die "registry on port $port (pid $pid) did not answer within 15s (HTTP $code)"
}

if [[ "${1:-}" == stop ]]; then
  stop_all
  exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [stop]"

pkgs=(curl)
command -v docker-registry >/dev/null 2>&1 || pkgs+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || pkgs+=(apache2-utils)
apt_install "${pkgs[@]}"

ensure_registry 5000 plain
ensure_registry 5001 auth
ensure_registry 5002 broken

# The auth registry must take the right password and refuse a wrong one.
code="$(http_code http://127.0.0.1:5001/v2/ -u "$AUTH_USER:$AUTH_PASSWORD")"
[[ "$code" == 200 ]] || die "auth registry refuses $AUTH_USER with the right password (HTTP $code)"
code="$(http_code http://127.0.0.1:5001/v2/ -u "$AUTH_USER:wrong-password")"
[[ "$code" == 401 ]] || die "auth registry does not refuse a wrong password (HTTP $code)"
