#!/usr/bin/env bash
# Sets up, builds and starts the moeserve gRPC server on the built-in default model (the small
# DECO trained on the fortunes corpus, shipped in models/deco-demo; see tools/train/README.md).
# gRPC on 0.0.0.0:50051, Prometheus metrics on 127.0.0.1:9400. Ctrl-C drains and stops.
# Extra arguments go to moeserve, e.g. --set scheduler.max_running=16.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
exec build/server/moeserve --config deploy/config/default.yaml "$@"
