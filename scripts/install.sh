#!/usr/bin/env bash
# Install clipcleaner into ./.venv (idempotent). With --test also the system packages the test suite needs
# (Debian chromium for the browser test, PostgreSQL for the shared-review tests; needs root / apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ "${1:-}" == "--test" ]]; then
  need=()
  [[ -x /usr/bin/chromium ]] || need+=(chromium)
  command -v pg_ctlcluster >/dev/null 2>&1 || [[ -d /usr/lib/postgresql ]] || need+=(postgresql)
  if (( ${#need[@]} )); then
    if [[ $(id -u) -eq 0 ]]; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
      echo "install.sh: please install ${need[*]} (Debian packages) for the full test suite" >&2
    fi
  fi
fi
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location '" || true; }; }  # hide this machine's index-mirror chatter
quiet .venv/bin/python -m pip install -q --upgrade pip >/dev/null
quiet .venv/bin/python -m pip install -q -r requirements.txt
quiet .venv/bin/python -m pip install -q --no-deps -e .
echo "installed: $(.venv/bin/clipcleaner --version)"
