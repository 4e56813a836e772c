#!/usr/bin/env bash
# Configures and builds moeserve (Release, warnings on) into ./build (or $BUILD_DIR).
# Extra arguments go to cmake's configure step, e.g. -DMOESERVE_SANITIZE=ON;
# BUILD_TARGETS="a b" builds only those targets (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-Release} "$@" >/dev/null
targets=()
[ -z "${BUILD_TARGETS:-}" ] || targets=(--target ${BUILD_TARGETS})
cmake --build "$BUILD_DIR" -j"$(nproc)" "${targets[@]}"
