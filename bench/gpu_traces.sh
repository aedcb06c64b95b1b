#!/bin/bash
# Collect the H200 traces: every section of bench/gpu_traces.py in its own process, each bounded
# in time, so a crash or a timeout in one section loses only that section.
#   bash bench/gpu_traces.sh OUT_DIR [REPO_ROOT] [quick]
OUT=$1; ROOT=${2:-.}; QUICK=${3:-}
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
mkdir -p "$OUT"
if [ -n "$QUICK" ]; then Q=--quick; B_GEMM=25; B_STEPS=50; else Q=; B_GEMM=110; B_STEPS=310; fi
sec() {  # sec NAME BUDGET_S
  echo "== section $1 (budget $2 s) at $(date -u +%T)"
  timeout $(( $2 + 40 )) python3 "$ROOT/bench/gpu_traces.py" --out "$OUT" --root "$ROOT" $Q \
      --section "$1" --budget-s "$2" 2>&1 | grep -v -i "warn"
  echo "== section $1 rc=${PIPESTATUS[0]}"
}
sec env 60
sec power 80
sec check 60
sec gemm $B_GEMM
sec steps $B_STEPS
sec final 20
# second pass (a separate device call in the shipped traces): off-grid and heterogeneous steps
#   python3 bench/gpu_traces.py --out OUT --root ROOT --section steps --grid extra --budget-s 200
