#!/usr/bin/env bash
# CTest entry for the openai npm client test: installs the pinned client (npm ci, from
# package-lock.json) when node_modules is missing or older than the lockfile, then runs it.
# Exit 77 (CTest skip) when node/npm are absent or the registry cannot be reached.
#   run_test.sh MOESERVE_BINARY MODEL_DIR
set -euo pipefail
moeserve=$(realpath "$1")
model=$(realpath "$2")
cd "$(dirname "$0")"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "skip: node and npm are needed (scripts/setup.sh installs nodejs)"
  exit 77
fi
if [ ! -f node_modules/openai/package.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  if ! npm ci --no-audit --no-fund --loglevel=error; then
    echo "skip: npm ci failed (is the npm registry reachable?)"
    exit 77
  fi
fi
exec node openai_client_test.mjs --moeserve "$moeserve" --model "$model"
