#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan) in build-fuzz and runs each for
# FUZZ_SECONDS (default 20) over its seed corpus (tests/fuzz/corpus/<target>, which also keeps
# every input that once crashed, as a regression test). Fails on any crash, leak or hang.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-20}
TARGETS=(safetensors_fuzzer shard_index_fuzzer model_config_fuzzer server_config_fuzzer
         request_validation_fuzzer tokenizer_fuzzer)
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOESERVE_FUZZ=ON \
  -DMOESERVE_BUILD_TESTS=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${TARGETS[@]}"
for t in "${TARGETS[@]}"; do
  work=$(mktemp -d)
  cp -r "tests/fuzz/corpus/$t/." "$work/" 2>/dev/null || true
  echo "fuzz: $t for ${SECONDS_EACH}s"
  # New inputs go to a scratch copy; the committed corpus only changes by hand.
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
    "build-fuzz/tests/fuzz/$t" "$work" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=4096 \
    -max_len=65536 -print_final_stats=0 -artifact_prefix="build-fuzz/$t-" 2>&1 | tail -3
  rm -rf "$work"
done
echo "fuzz: no crashes"
