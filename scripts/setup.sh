#!/usr/bin/env bash
# Sets up everything Beatless needs on a fresh Debian machine (Python 3.11+, Node 20+).
# Idempotent: a second run only checks. Installs:
#   - redis-server (and PostgreSQL when missing) through apt
#   - the virtualenv .venv with the locked dependencies (uv, bytecode compiled)
#   - the pinned CDK CLI from package.json through npm
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }

# --- system packages -------------------------------------------------------
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ! command -v pg_ctl >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
  missing+=(postgresql)
fi
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing ${missing[*]} with apt"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- Python ------------------------------------------------------------------
python=${PYTHON:-python3}
"$python" - <<'PY' || { echo "Python 3.11+ is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$python" -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==0.13.9"
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python dependencies (requirements.lock)"
  # Bytecode is compiled at install time: with PYTHONDONTWRITEBYTECODE set,
  # aws_cdk would otherwise be re-parsed by every process (8 s -> 16 s synths).
  VIRTUAL_ENV="$PWD/.venv" .venv/bin/uv pip install -q --compile-bytecode -r requirements.lock -e .
  echo "$want" >"$stamp"
fi

# --- CDK CLI -----------------------------------------------------------------
if command -v npm >/dev/null 2>&1; then
  if [ ! -x node_modules/.bin/cdk ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    log "installing the pinned CDK CLI (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
  fi
else
  log "npm not found: skipping the CDK CLI (needed only for npx cdk synth/deploy)"
fi
log "ready"
