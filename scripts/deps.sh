#!/usr/bin/env bash
# Install what the code and the test suite need (not the Docker side: see
# engine.sh, registry.sh, images.sh):
#   - Debian packages: chromium (browser tests drive /usr/bin/chromium),
#     nodejs when there is no `node` (the pages' scripts are tested with Node's
#     own test runner: tests/js), and python3-venv if this python3 cannot make
#     a virtualenv;
#   - .venv with `pip install -e '.[dev]'`, redone when pyproject.toml changes.
# Idempotent; a second run touches neither apt nor PyPI.
#
# PYTHON=python3.12 scripts/deps.sh  picks the interpreter for a new .venv.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT="$(cd "$PULLRUN_SCRIPTS_DIR/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.pullrun-deps-installed"

command -v "$PYTHON" >/dev/null 2>&1 || apt_install python3
pkgs=(chromium)
if ! command -v node >/dev/null 2>&1; then
  pkgs+=(nodejs)
fi
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  pkgs+=(python3-venv)
fi
if is_root && is_debian; then
  apt_install "${pkgs[@]}"
else
  if ! command -v chromium >/dev/null 2>&1; then
    log "warning: chromium is not installed and this is not root on Debian; browser tests will fail"
  fi
  if ! command -v node >/dev/null 2>&1; then
    log "warning: node is not installed and this is not root on Debian; the JS tests (tests/js) will fail"
  fi
fi

if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  log "$VENV is broken (its interpreter does not start): recreating it"
  rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
  rm -f "$STAMP"
fi

if [[ -f "$STAMP" && "$STAMP" -nt "$ROOT/pyproject.toml" ]]; then
  log "$VENV is up to date with pyproject.toml"
else
  log "pip install -e '.[dev]' into $VENV"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  (cd "$ROOT" && "$VENV/bin/python" -m pip install -q -e '.[dev]') \
    || die "pip install -e '.[dev]' failed"
  touch "$STAMP"
fi
