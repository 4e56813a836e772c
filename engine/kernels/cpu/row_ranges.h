// Loops over rows (a step's tokens, an expert group's entries) whose work is small and
// elementwise: norms, biases, RoPE, casts to the kernels' input form, activations. A few rows
// run inline, where a fork/join would cost more than the loop; a prompt's or a large batch's
// are split across the pool (run on one thread, they left the other cores idle for about a
// fifth of a 512-token prompt).
#ifndef MOESERVE_ENGINE_KERNELS_CPU_ROW_RANGES_H_
#define MOESERVE_ENGINE_KERNELS_CPU_ROW_RANGES_H_

#include <algorithm>
#include <cstdint>
#include <functional>

#include "engine/kernels/cpu/thread_pool.h"

namespace moeserve {

// Elements per chunk at the least (about 85 tokens of 768 values): enough work to outweigh
// a fork/join. Lower (8192) split the norms and input casts of batch-16 decode steps too: 96 ->
// 236 parallel regions per step for no gain (DECO-0.1B bf16, 655-700 tokens/s either way).
inline constexpr int64_t kMinElementsPerChunk = 65536;

// fn(begin, end) over disjoint ranges covering [0, rows), rows of `row_elements` elements;
// inline where pool is null or the rows fit in one chunk. fn must touch only its own rows.
inline void ForRowRanges(ThreadPool* pool, int64_t rows, int64_t row_elements,
                         const std::function<void(int64_t, int64_t)>& fn) {
  if (pool == nullptr) {
    if (rows > 0) fn(0, rows);
    return;
  }
  const int64_t per_row = std::max<int64_t>(1, row_elements);
  const int64_t min_rows = (kMinElementsPerChunk + per_row - 1) / per_row;
  pool->ParallelFor(rows, fn, min_rows);
}

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_KERNELS_CPU_ROW_RANGES_H_
