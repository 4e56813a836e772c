#!/usr/bin/env bash
# The one prepared script for a lent GPU (issues "GPU on a device" and "GPU serving end to end"),
# sized for about 12 minutes of device time on an H100/H200 (16 cores): build for that GPU only,
# the CUDA correctness tests, the serving and observability tests on the CUDA backend, the kernel
# benchmark (DECO-0.5B and 1.2B shapes, sparse vs dense, graphs on/off) and moectl bench at
# concurrency 1, 8, 32, 64. Everything it prints and writes goes to $OUT (default
# bench/results/device-<date>), which the device tool brings back.
#   run: bash scripts/device_check.sh            (on the device machine, from the repository root)
# Stages are independent: one failing does not stop the next; the summary lists each exit status.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/device-$(date +%Y%m%d)}
mkdir -p "$OUT"
LOG="$OUT/device_check.log"
ARCH=${CUDA_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)}
ARCH=${ARCH:-90}
declare -A STATUS
stage() {  # stage NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  echo "==== $name ($(date -u +%T))" | tee -a "$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  STATUS[$name]=$?
  echo "==== $name: exit ${STATUS[$name]}" | tee -a "$LOG"
}
{ nvidia-smi; nvcc --version; git log --oneline -1; } >"$OUT/device.txt" 2>&1

stage setup 300 bash scripts/setup.sh
stage build 420 bash -c "BUILD_DIR=build-device BUILD_TARGETS='moeserve moectl moeserve-run gpu_backend_tests \
  backend_select_tests serving_integration_tests gpu_decode_bench default_model' bash scripts/build.sh \
  -DMOESERVE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=$ARCH"
stage gpu_tests 300 ctest --test-dir build-device -L gpu --output-on-failure
stage serving_on_cuda 300 env MOESERVE_TEST_BACKEND=cuda ctest --test-dir build-device -R '^server[.]' \
  --output-on-failure
stage observability 240 ctest --test-dir build-device -R '^observability[.]' --output-on-failure
stage kernel_bench 420 bash -c "BUILD_DIR=build-device bash bench/gpu_bench.sh --batches 1,8,32,64 && \
  cp bench/results/gpu-*.md '$OUT'/"
# The server end to end on DECO-0.5B (20 % activation) with backend auto: GetModelInfo must say cuda.
MODEL=build-device/models/deco-0.5B-bf16-act20
stage serve_bench 420 bash -c "
  build-device/server/moeserve --set model.path=$MODEL,model.backend=auto,server.listen=127.0.0.1:50061,\
metrics.listen=127.0.0.1:9461,scheduler.kv_memory_mb=8192 >'$OUT/moeserve.log' 2>&1 & pid=\$!
  for i in \$(seq 120); do build-device/clients/moectl/moectl health --target 127.0.0.1:50061 && break; sleep 1; done
  build-device/clients/moectl/moectl info --target 127.0.0.1:50061 | tee '$OUT/model_info.txt'
  grep -q 'backend: \"cuda\"' '$OUT/model_info.txt' || echo 'GetModelInfo does not report cuda'
  for c in 1 8 32 64; do
    build-device/clients/moectl/moectl bench --target 127.0.0.1:50061 --concurrency \$c --num_requests \$((c * 4)) \
      --json >'$OUT/moectl_bench_c'\$c'.json' || true
  done
  curl -s 127.0.0.1:9461/metrics >'$OUT/metrics.txt'
  kill -TERM \$pid; wait \$pid"
{
  echo "| stage | exit |"; echo "| --- | --- |"
  for s in setup build gpu_tests serving_on_cuda observability kernel_bench serve_bench; do
    echo "| $s | ${STATUS[$s]:-not run} |"
  done
} | tee "$OUT/summary.md"
