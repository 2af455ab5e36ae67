#!/usr/bin/env bash
# Unattended GPU check (under 8 minutes): embedding throughput (fp16 autocast scan path vs a bare encode loop,
# random-weight ViT-B-32) and scoring at 100k and 1M on the GPU; every number goes to ONE JSON file:
# $OUT/gpu_check.json when $OUT is set, else the path given as the first argument.
# On a machine without CUDA it says so, skips the GPU parts and runs the scoring on the CPU at the sizes given:
#   bash bench/gpu_check.sh /tmp/gpu_check.json --sizes 2000 --ks 10      # dry run on a CPU machine
# Python: $PYTHON, else .venv/bin/python, else python3 (it needs the project's requirements).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -n "${OUT:-}" ]; then
  DEST="$OUT/gpu_check.json"
  [ $# -gt 0 ] && [[ "$1" != --* ]] && shift  # $OUT wins over a path argument
else
  if [ $# -eq 0 ] || [[ "$1" == --* ]]; then
    echo "usage: bash bench/gpu_check.sh OUT.json [--sizes N,N --ks K,K] (or set \$OUT)" >&2
    exit 2
  fi
  DEST="$1"
  shift
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# 470 s hard stop (the Python side stops starting new steps at 450 s); the JSON is rewritten after every step
timeout -k 10 "${GPU_CHECK_TIMEOUT:-470}" "$PY" -m bench.gpu_check --out "$DEST" "$@"
rc=$?
[ $rc -eq 124 ] && echo "gpu_check: stopped at the time limit; $DEST holds the steps that finished" >&2
exit $rc
