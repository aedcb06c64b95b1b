#!/bin/bash
# Collect the tensor-parallel traces on the GPUs of one host: every section of
# bench/tp_traces.py in its own set of processes, each bounded in time, so a crash, a hang or a
# timeout in one section loses only that section. NVLink multicast stays off (NCCL_NVLS_ENABLE=0
# and friends are exported here and forced again inside the script).
#   bash bench/tp_traces.sh OUT_DIR NPROC [REPO_ROOT] [quick]
# Environment (all optional):
#   SECTIONS="env collectives steps"   which sections to run (one device call may not hold all)
#   COLL_WORLDS="$NPROC"               world sizes of the collectives section, e.g. "2 4 8" on
#                                      an 8-GPU host (rows carry their world size)
#   PROTOS="LL LL128 Simple"           also collectives with each NCCL protocol forced
#   B_COLL, B_STEPS                    budgets in seconds (per world size / for the steps)
OUT=$1; NPROC=$2; ROOT=${3:-.}; QUICK=${4:-}
SECTIONS=${SECTIONS:-env collectives steps}; COLL_WORLDS=${COLL_WORLDS:-$NPROC}; PROTOS=${PROTOS:-}
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p "$OUT"
if [ "$QUICK" = quick ]; then Q=--quick; B_COLL=${B_COLL:-40}; B_STEPS=${B_STEPS:-60}
else Q=; B_COLL=${B_COLL:-110}; B_STEPS=${B_STEPS:-300}; fi
sec() {  # sec NAME BUDGET_S NPROC [args...]
  local name=$1 budget=$2 n=$3; shift 3
  echo "== section $name on $n GPUs $* (budget $budget s) at $(date -u +%T)"
  timeout $(( budget + 90 )) python3 "$ROOT/bench/tp_traces.py" --out "$OUT" --root "$ROOT" $Q \
      --nproc "$n" --section "$name" --budget-s "$budget" "$@" 2>&1 | grep -v -i "warn"
  echo "== section $name rc=${PIPESTATUS[0]}"
}
for s in $SECTIONS; do
  case $s in
    env) sec env 30 "$NPROC" ;;
    collectives)
      for w in $COLL_WORLDS; do
        sec collectives "$B_COLL" "$w"
        for p in $PROTOS; do sec collectives $(( B_COLL / 2 )) "$w" --nccl-proto "$p"; done
      done ;;
    steps) sec steps "$B_STEPS" "$NPROC" ;;
  esac
done
