#!/usr/bin/env bash
# Sets up, builds and streams a generation from the built-in default model (a small random
# DECO checkpoint with its own SentencePiece tokenizer, generated at build time).
# Arguments are passed to moeserve-run, e.g. --prompt "..." --max-new-tokens 64.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
if [ $# -eq 0 ]; then set -- --prompt "Mixture-of-experts models route each token to" --max-new-tokens 48; fi
exec build/tools/moeserve-run --model build/models/deco-default "$@"
