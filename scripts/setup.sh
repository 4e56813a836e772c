#!/usr/bin/env bash
# Installs every Debian package moeserve needs to build, run its tools and run its tests.
# Idempotent: packages already present are skipped by apt. Needs root (or sudo).
# `setup.sh --aarch64` also installs what scripts/cross_aarch64.sh needs on an x86_64 host:
# Debian's aarch64 cross toolchain, qemu-user, and the arm64 multiarch libraries the engine and
# its unit tests link (all Multi-Arch: same, at the host's versions; --no-remove makes apt stop
# rather than remove an installed package).
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake ninja-build pkg-config openssl
  # libraries
  libabsl-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libsentencepiece-dev sentencepiece libyaml-cpp-dev prometheus-cpp-dev nlohmann-json3-dev
  libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # fuzzing (libFuzzer) and certificates for the TLS tests
  clang libclang-rt-14-dev
  # a real Prometheus for the observability test
  prometheus
  # tools, reference model and tests
  python3 python3-numpy python3-torch python3-grpcio python3-protobuf python3-yaml
  # benchmark plots (bench/cpu_suite.py)
  python3-matplotlib
  # the OpenAI API's client test (clients/openai-node: npm ci of the pinned openai package;
  # Debian splits npm into its own package, NodeSource's nodejs bundles it)
  nodejs
  # tools/train: the demo models' corpus (English fortune cookies, BSD licence) and an
  # optimised BLAS for torch (Debian's torch links the reference libblas3 otherwise, ~5x
  # slower; the serial build keeps training single-threaded and deterministic)
  fortunes libopenblas0-serial
)
CROSS_AARCH64=0
if [ "${1:-}" = --aarch64 ]; then
  CROSS_AARCH64=1
  PACKAGES+=(g++-aarch64-linux-gnu qemu-user libabsl-dev:arm64 libgtest-dev:arm64 libgmock-dev:arm64)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ "$CROSS_AARCH64" = 1 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
fi
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends --no-remove "${missing[@]}"
