#!/usr/bin/env bash
# Trains the demo model (models/tiny-qwen3-moe-novels) on one GPU, offline.
#
#   bash tools/train_demo/gpu_train.sh CORPUS_DIR OUT_DIR [extra train.py flags]
#
# CORPUS_DIR is what tools/train_demo/prepare_corpus.py wrote (train.txt, heldout.txt,
# manifest.json); nothing is downloaded here. Needs python3 with torch and transformers
# (tokenizers and safetensors come with transformers). OUT_DIR receives the checkpoint
# (config.json, model.safetensors, tokenizer.json, tokenizer_config.json), metrics.json
# and train.log. The whole run keeps within MINUTES (default 5.5) of wall time.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: bash tools/train_demo/gpu_train.sh CORPUS_DIR OUT_DIR [train.py flags]" >&2
  exit 2
fi
corpus=$1
out=$2
shift 2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}

for f in train.txt heldout.txt manifest.json; do
  [ -f "$corpus/$f" ] || { echo "gpu_train.sh: $corpus/$f missing (run prepare_corpus.py)" >&2; exit 2; }
done
mkdir -p "$out"

# No network on the GPU machine: never let the libraries try.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export TOKENIZERS_PARALLELISM=true PYTHONUNBUFFERED=1

{
  echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo no-git)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$python" -c 'import torch, transformers, tokenizers, safetensors; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available()); print("transformers", transformers.__version__, "tokenizers", tokenizers.__version__, "safetensors", safetensors.__version__)'
} 2>&1 | tee "$out/train.log"

"$python" "$here/train.py" --corpus "$corpus" --out "$out" --minutes "${MINUTES:-5.5}" "$@" 2>&1 | tee -a "$out/train.log"
