#!/usr/bin/env bash
# Install everything (venv, chromium, PostgreSQL) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
if bash .ci/postgres.sh >/dev/null; then
  # shellcheck disable=SC1091
  . .ci/pg.env
else
  echo "test.sh: PostgreSQL could not be started; its tests will be skipped" >&2
  [[ "${CI:-}" == "true" ]] && exit 1
fi
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "test.sh: pytest collected no tests: failing" >&2
  exit 1
fi
exit $rc
