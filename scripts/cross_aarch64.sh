#!/usr/bin/env bash
# The Jetson CPU path on an x86_64 machine: cross-compiles the engine (CPU kernels with NEON,
# routers, checkpoint loading) and its C++ unit tests for aarch64 with Debian's cross toolchain
# (cmake/aarch64-linux-gnu.cmake: -march=armv8.2-a+fp16+dotprod, Jetson Orin's Cortex-A78AE),
# then runs the unit tests under qemu-user on an emulated Neoverse-N1, the A78AE's instruction set
# (`ctest -L unit`; CMAKE_CROSSCOMPILING_EMULATOR).
# Engine only (-DMOESERVE_ENGINE_ONLY=ON): Debian's arm64 SentencePiece cannot be co-installed
# with the amd64 one, and the server's gRPC stack is built natively on the Jetson (its Dockerfile).
# CPU only (-DMOESERVE_CUDA=OFF): the host's nvcc targets x86_64.
# Into ./build-aarch64 (or $AARCH64_BUILD_DIR); AARCH64_JOBS sets the build parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
case "$(uname -m)" in
  x86_64) ;;
  *) echo "cross_aarch64: host is $(uname -m), not x86_64: nothing to cross-build"; exit 0 ;;
esac
bash scripts/setup.sh --aarch64
BUILD_DIR=${AARCH64_BUILD_DIR:-build-aarch64}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" -DMOESERVE_ENGINE_ONLY=ON -DMOESERVE_CUDA=OFF >/dev/null
cmake --build "$BUILD_DIR" -j"${AARCH64_JOBS:-$(nproc)}"
# Every test binary must be aarch64 code (run by qemu, not by the host).
for t in "$BUILD_DIR"/tests/engine/*_unit_tests; do
  readelf -h "$t" | grep -q 'Machine: *AArch64' || { echo "cross_aarch64: $t is not an aarch64 binary" >&2; exit 1; }
done
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)" -L unit
