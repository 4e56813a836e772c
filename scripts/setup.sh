#!/usr/bin/env bash
# Installs every Debian package moeserve needs to build, run its tools and run its tests.
# Idempotent: packages already present are skipped by apt. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake ninja-build pkg-config openssl
  # libraries
  libabsl-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libsentencepiece-dev sentencepiece libyaml-cpp-dev prometheus-cpp-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # fuzzing (libFuzzer) and certificates for the TLS tests
  clang libclang-rt-14-dev
  # a real Prometheus for the observability test
  prometheus
  # tools, reference model and tests
  python3 python3-numpy python3-torch python3-grpcio python3-protobuf python3-yaml
)

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
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
