#!/usr/bin/env bash
# CUDA backend benchmark (issue 7 §5) on a GPU machine: DECO-0.5B and DECO-1.2B shapes (random
# bf16 weights calibrated to ~20 % expert activation, as trained DECO), decode tokens/s at batch
# 1, 8, 32, 64, prefill tokens/s, sparse vs --dense-experts in the same run, and the roofline
# fraction of the weight bytes read. Results go to bench/results/gpu-<device>-<date>.md.
#   BUILD_DIR=build-cuda bash bench/gpu_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
BENCH=$BUILD_DIR/bench/cuda/gpu_decode_bench
[ -x "$BENCH" ] || { echo "missing $BENCH: configure with -DMOESERVE_CUDA=ON and build target gpu_decode_bench" >&2; exit 1; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv || true
DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' /' '__' || echo unknown)
OUT=bench/results/gpu-${DEVICE}-$(date +%Y%m%d).md
mkdir -p bench/results
for SIZE in 0.5B 1.2B; do
  MODEL=$BUILD_DIR/models/deco-$SIZE-bf16-act20
  if [ ! -f "$MODEL/model.safetensors" ]; then
    /usr/bin/python3 tools/gen_tiny_model.py --out "$MODEL" --variant deco --size $SIZE --seed 1 --dtype bf16 \
      --target-activation 0.2
  fi
  echo "## DECO-$SIZE shape ($(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?))" | tee -a "$OUT"
  echo "command: $BENCH --model $MODEL $*" | tee -a "$OUT"
  "$BENCH" --model "$MODEL" "$@" | tee -a "$OUT"
  echo | tee -a "$OUT"
done
echo "results appended to $OUT"
