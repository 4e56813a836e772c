// What the engine is asked to compute in one step, and what it returns. Plain values: the
// scheduler builds a ForwardBatch without knowing anything about tensors.
#ifndef MOESERVE_ENGINE_FORWARD_BATCH_H_
#define MOESERVE_ENGINE_FORWARD_BATCH_H_

#include <cstdint>
#include <span>
#include <vector>

#include "engine/expert_budget.h"

namespace moeserve {

enum class LogitsMode { kNone, kLast, kAll };

// One sequence's tokens in this step (a prefill chunk, or one decode token).
struct SequenceChunk {
  std::span<const int32_t> tokens;
  int32_t start_position = 0;             // absolute position of tokens[0] in the sequence
  std::span<const int32_t> block_table;   // KV blocks covering positions [0, start + size)
  LogitsMode logits = LogitsMode::kLast;
  ExpertBudget budget;                    // per-token expert budget; default = exact routing
};

struct ForwardBatch {
  std::vector<SequenceChunk> chunks;
};

struct ForwardOutput {
  int64_t vocab_size = 0;
  std::vector<float> logits;                // [rows, vocab], rows in chunk order
  std::vector<int32_t> chunk_logits_begin;  // first logits row of each chunk (size chunks + 1)
  // |A| per token for every layer: [num_layers][tokens], 0 for dense layers. Feeds MoeStats.
  std::vector<int32_t> active_counts;
  // Weight bytes the step read (every matrix pass counted once; routed experts counted for
  // the batch's union only). The figure of merit for memory-bound decoding.
  int64_t weight_bytes_read = 0;
  // CPU backend, for benchmarks: parallel regions this step, the caller's wait at their joins
  // and the workers' spinning between them (ThreadPool::Stats), in nanoseconds.
  int64_t parallel_regions = 0;
  int64_t join_wait_ns = 0;
  int64_t worker_spin_ns = 0;

  const float* Logits(int64_t row) const { return logits.data() + row * vocab_size; }
  float* MutableLogits(int64_t row) { return logits.data() + row * vocab_size; }
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_FORWARD_BATCH_H_
