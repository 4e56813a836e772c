// Causal GQA self-attention over the paged KV cache, with rotate-half RoPE (spec deco.md §3.2).
#ifndef MOESERVE_ENGINE_ATTENTION_H_
#define MOESERVE_ENGINE_ATTENTION_H_

#include <cstdint>
#include <vector>

#include "engine/kernels/cpu/thread_pool.h"
#include "engine/kv_cache.h"

namespace moeserve {

// cos/sin of p·θ^(-2i/h_d) for p < max_positions, i < h_d/2.
class RopeTable {
 public:
  RopeTable(int64_t max_positions, int head_dim, double theta);
  // Rotates `heads` vectors of head_dim at position p, in place.
  void Apply(float* x, int heads, int32_t position) const;

 private:
  int half_;
  std::vector<float> cos_, sin_;  // [max_positions, half]
};

// Per-token placement of the batch in the cache.
struct TokenPlacement {
  int32_t position;
  const int32_t* block_table;
};

struct AttentionShape {
  int num_heads;
  int num_kv_heads;
  int head_dim;
};

class PagedAttention {
 public:
  PagedAttention(ThreadPool* pool, AttentionShape shape) : pool_(pool), shape_(shape) {}

  // Writes the tokens' k, v ([T, n_g·h_d], already rotated) into the cache slots of their
  // positions in `layer`: all of them, or those in [begin, end) (one thread's share of a
  // prompt; no two tokens of a step share a slot).
  void Store(KvCache& cache, int layer, const std::vector<TokenPlacement>& tokens, const float* k,
             const float* v) const {
    Store(cache, layer, tokens, k, v, 0, static_cast<int64_t>(tokens.size()));
  }
  void Store(KvCache& cache, int layer, const std::vector<TokenPlacement>& tokens, const float* k, const float* v,
             int64_t begin, int64_t end) const;

  // out[t] = softmax(q[t]·Kᵀ/√h_d) V over positions [0, position_t] of token t's sequence.
  // q and out are [T, n_h·h_d]. Store must have run for every token of the step first.
  void Attend(const KvCache& cache, int layer, const std::vector<TokenPlacement>& tokens, const float* q,
              float* out);

 private:
  ThreadPool* pool_;
  AttentionShape shape_;
  std::vector<std::vector<float>> scores_;  // per-thread scratch
  std::vector<std::vector<uint16_t>> query_bf16_;  // per-thread: the item's queries in bf16
  std::vector<int64_t> block_start_;  // the step's query blocks: first token of each, then T
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_ATTENTION_H_
