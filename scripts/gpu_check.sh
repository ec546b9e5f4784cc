#!/usr/bin/env bash
# The model layer's GPU paths, on a machine with an NVIDIA GPU:
#   1. the transformers backend on CUDA (bf16), through `medagent model check`;
#   2. the in-process vLLM backend (`--backend vllm`), when vLLM is installed.
#
# usage: scripts/gpu_check.sh [MODEL]      MODEL: a model folder or hub id;
#        default: the tiny test VLM, built offline into .medagent/tiny-vlm
# env:   PYTHON (default python3)
# exit:  0 all parts ran and passed, 1 a part failed, 3 nothing failed but a part was skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODEL=${1:-}
if [ -z "$MODEL" ]; then
  MODEL=.medagent/tiny-vlm
  [ -f "$MODEL/config.json" ] || HF_HUB_OFFLINE=1 $PY -m medagent model build-tiny-vlm "$MODEL" || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  || echo "nvidia-smi not found: is this a GPU machine?"
$PY -c "import torch; print('torch', torch.__version__, 'cuda available:', torch.cuda.is_available())"

declare -a parts results
run_part() {  # name, command...
  local name=$1; shift
  echo; echo "== $name"
  if "$@"; then results+=("ok"); else results+=("FAIL"); fi
  parts+=("$name")
}

run_part "transformers on cuda" \
  $PY -m medagent model check --backend transformers --device cuda --model "$MODEL"

if $PY -c "import vllm" 2>/dev/null; then
  run_part "vllm in-process" $PY -m medagent model check --backend vllm --model "$MODEL"
else
  echo; echo "== vllm in-process: skipped (vllm is not installed; pip install 'medagent[vllm]')"
  parts+=("vllm in-process"); results+=("skipped")
fi

echo; printf '%-24s %s\n' "part" "result"
status=0
for i in "${!parts[@]}"; do
  printf '%-24s %s\n' "${parts[$i]}" "${results[$i]}"
  case ${results[$i]} in FAIL) status=1 ;; skipped) [ $status -eq 0 ] && status=3 ;; esac
done
exit $status
