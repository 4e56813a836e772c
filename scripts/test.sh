#!/usr/bin/env bash
# The whole test suite on a fresh machine: install packages, build (Release, warnings on),
# run every CTest test; then build again with ASan+UBSan and run the unit tests there; then
# run every libFuzzer target for a bounded time (scripts/fuzz.sh).
# MOESERVE_SKIP_SANITIZERS=1 skips the sanitizer pass, MOESERVE_SKIP_FUZZ=1 the fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
if [ "${MOESERVE_SKIP_SANITIZERS:-0}" != 1 ]; then
  # RelWithDebInfo keeps the sanitizer build fast enough to run the reference tests.
  BUILD_DIR=build-asan BUILD_TYPE=RelWithDebInfo bash scripts/build.sh -DMOESERVE_SANITIZE=ON
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$(nproc)" -L unit
fi
if [ "${MOESERVE_SKIP_FUZZ:-0}" != 1 ]; then
  FUZZ_SECONDS=${FUZZ_SECONDS:-20} bash scripts/fuzz.sh
fi
