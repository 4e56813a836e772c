#!/usr/bin/env bash
# The whole test suite on a fresh machine: install packages, build (Release, warnings on),
# run every CTest test; then build with ASan+UBSan and run the unit tests and the C++ serving
# tests (`server.*`) there, then the same serving tests and the C++ unit tests under TSan;
# then run every libFuzzer target for a bounded time (scripts/fuzz.sh); last, cross-build the
# engine for aarch64 (Jetson) and run its C++ unit tests under qemu-user (scripts/cross_aarch64.sh).
# MOESERVE_SKIP_SANITIZERS=1 skips the sanitizer passes, MOESERVE_SKIP_FUZZ=1 the fuzzing,
# MOESERVE_SKIP_AARCH64=1 the aarch64 stage. Where nvcc exists the main build has the CUDA
# backend (MOESERVE_CUDA defaults ON): every test runs on that binary, the GPU tests skip with
# "no CUDA device: ..." on a machine without one, and the server serves on the CPU (backend auto).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
if [ "${MOESERVE_SKIP_SANITIZERS:-0}" != 1 ]; then
  supp="$PWD/tests/sanitizers"
  # RelWithDebInfo keeps the sanitizer builds fast enough to run the reference tests.
  BUILD_DIR=build-asan BUILD_TYPE=RelWithDebInfo bash scripts/build.sh -DMOESERVE_SANITIZE=ON
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$supp/lsan.supp \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  ctest --test-dir build-asan --output-on-failure -j"$(nproc)" -L unit
  ctest --test-dir build-asan --output-on-failure -j"$(nproc)" -R '^server[.]'
  # TSan: the serving loop, reactors, thread pool (and its own tests) and scheduler under real concurrency.
  BUILD_DIR=build-tsan BUILD_TYPE=RelWithDebInfo \
    BUILD_TARGETS="serving_integration_tests lapsum_unit_tests checkpoint_unit_tests thread_pool_unit_tests" \
    bash scripts/build.sh -DMOESERVE_TSAN=ON
  export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$supp/tsan.supp"
  ctest --test-dir build-tsan --output-on-failure -j"$(nproc)" -R '^server[.]|^(LapSum|ExpertBudget|Safetensors|ShardIndex|ModelConfig|ThreadPool)'
fi
if [ "${MOESERVE_SKIP_FUZZ:-0}" != 1 ]; then
  FUZZ_SECONDS=${FUZZ_SECONDS:-20} bash scripts/fuzz.sh
fi
if [ "${MOESERVE_SKIP_AARCH64:-0}" != 1 ]; then
  bash scripts/cross_aarch64.sh
fi
