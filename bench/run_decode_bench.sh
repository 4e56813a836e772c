#!/usr/bin/env bash
# Batch-1 decode benchmark on the DECO-0.1B shape (bf16, 2 threads, 32-token prompt,
# 128 new tokens, median of 5 runs). Generates the checkpoint on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
MODEL=${MODEL:-$BUILD_DIR/models/deco-0.1B-bf16}
if [ ! -f "$MODEL/model.safetensors" ]; then
  /usr/bin/python3 tools/gen_tiny_model.py --out "$MODEL" --variant deco --size 0.1B --seed 1 --dtype bf16
fi
"$BUILD_DIR/bench/decode_bench" --model "$MODEL" --dtype bf16 --threads 2 --prompt_len 32 --new_tokens 128 --runs 5 "$@"
