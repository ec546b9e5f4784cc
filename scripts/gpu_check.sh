#!/usr/bin/env bash
# The model layer's GPU paths, on a machine with an NVIDIA GPU and vLLM installed:
#   1. the transformers backend on CUDA (bf16), through `medagent model check`;
#   2. the in-process vLLM backend (`--backend vllm`), through `medagent model check`;
#   3. the vLLM server integration tests (tests/integration), served by this python's vLLM.
#
# usage: scripts/gpu_check.sh [MODEL]      MODEL: a model folder or hub id in the local cache;
#        default: the tiny test VLM, built offline into .medagent/tiny-vlm
# env:   PYTHON (default python3; needs medagent importable, and vllm for parts 2 and 3)
# exit:  0 all parts ran and passed, 1 a part failed, 3 nothing failed but a part was skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODEL=${1:-}
if [ -z "$MODEL" ]; then
  MODEL=.medagent/tiny-vlm
  [ -f "$MODEL/config.json" ] || HF_HUB_OFFLINE=1 $PY -m medagent model build-tiny-vlm "$MODEL" || exit 1
  unset MEDAGENT_VLLM_MODEL
else
  export MEDAGENT_VLLM_MODEL="$MODEL"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  || echo "nvidia-smi not found: is this a GPU machine?"
$PY -c "import torch; print('torch', torch.__version__, 'cuda available:', torch.cuda.is_available())"

parts=(); results=(); seconds=()
run_part() {  # name, command...
  local name=$1; shift
  echo; echo "== $name"
  local start=$SECONDS
  if "$@"; then results+=("ok"); else results+=("FAIL"); fi
  parts+=("$name"); seconds+=($((SECONDS - start)))
}
skip_part() {
  echo; echo "== $1: skipped ($2)"
  parts+=("$1"); results+=("skipped"); seconds+=(0)
}

run_part "transformers on cuda" \
  $PY -m medagent model check --backend transformers --device cuda --model "$MODEL"

if $PY -c "import vllm" 2>/dev/null; then
  run_part "vllm in-process" $PY -m medagent model check --backend vllm --model "$MODEL"
  run_part "vllm server tests" env MEDAGENT_VLLM_PYTHON="$(command -v $PY)" \
    $PY -m pytest -q -p no:cacheprovider -m vllm tests/integration
else
  skip_part "vllm in-process" "vllm is not installed; pip install 'medagent[vllm]'"
  skip_part "vllm server tests" "vllm is not installed"
fi

echo; printf '%-24s %-8s %s\n' "part" "result" "seconds"
status=0
for i in "${!parts[@]}"; do
  printf '%-24s %-8s %s\n' "${parts[$i]}" "${results[$i]}" "${seconds[$i]}"
  case ${results[$i]} in FAIL) status=1 ;; skipped) [ $status -eq 0 ] && status=3 ;; esac
done
exit $status
