#!/bin/bash
# Collect the tensor-parallel traces on NPROC GPUs of one host: every section of
# bench/tp_traces.py in its own set of processes, each bounded in time, so a crash, a hang or a
# timeout in one section loses only that section. NVLink multicast stays off (NCCL_NVLS_ENABLE=0
# and friends are exported here and forced again inside the script).
#   bash bench/tp_traces.sh OUT_DIR NPROC [REPO_ROOT] [quick] [protos]
# "protos" adds collective runs with each NCCL protocol forced (NCCL_PROTO=LL, LL128, Simple).
OUT=$1; NPROC=$2; ROOT=${3:-.}; QUICK=${4:-}; PROTOS=${5:-}
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p "$OUT"
if [ "$QUICK" = quick ]; then Q=--quick; B_COLL=40; B_STEPS=60; else Q=; B_COLL=120; B_STEPS=300; fi
sec() {  # sec NAME BUDGET_S [args...]
  local name=$1 budget=$2; shift 2
  echo "== section $name $* (budget $budget s) at $(date -u +%T)"
  timeout $(( budget + 90 )) python3 "$ROOT/bench/tp_traces.py" --out "$OUT" --root "$ROOT" $Q \
      --nproc "$NPROC" --section "$name" --budget-s "$budget" "$@" 2>&1 | grep -v -i "warn"
  echo "== section $name rc=${PIPESTATUS[0]}"
}
sec env 30
sec collectives $B_COLL
if [ "$PROTOS" = protos ]; then
  for p in LL LL128 Simple; do sec collectives $(( B_COLL / 2 )) --nccl-proto $p; done
fi
sec steps $B_STEPS
