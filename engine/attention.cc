#include "engine/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "engine/kernels/cpu/matmul.h"

namespace moeserve {
namespace {

// Queries scored and weighted together: at most the token count DotBlockFn takes and the
// queries WeightedRowsMultiFn takes.
constexpr int kQueryBlock = std::min(cpu::kMaxTokens, cpu::kMaxWeightedQueries);
constexpr int kMaxRowsPerCall = 16;  // above every kernel set's rows_per_call (4 or fewer)

// out[b][s] = dot(keys[s * ld, :n], xs[b]) for s < slots and b < nt queries, keys of
// `key_size` bytes per element: block(w, ld, n, xs, nt, out) and row(w, n, xs, nt, out) as in
// kernels.h, for query type Q. Every (slot, query) is its own accumulator in those kernels, so
// a query's scores do not depend on the others scored with it.
template <class Q, class Block, class Row>
void ScoreSlots(int per_call, Block block, Row row, const void* keys, int64_t key_size, int64_t ld, int slots, int n,
                const Q* const* xs, int nt, float* const* out) {
  float tmp[kMaxRowsPerCall * cpu::kMaxTokens];
  const unsigned char* base = static_cast<const unsigned char*>(keys);
  int s = 0;
  for (; s + per_call <= slots; s += per_call) {
    block(base + s * ld * key_size, ld, n, xs, nt, tmp);  // tmp[r * nt + b]
    for (int r = 0; r < per_call; ++r) {
      for (int b = 0; b < nt; ++b) out[b][s + r] = tmp[r * nt + b];
    }
  }
  for (; s < slots; ++s) {
    row(base + s * ld * key_size, n, xs, nt, tmp);
    for (int b = 0; b < nt; ++b) out[b][s] = tmp[b];
  }
}

}  // namespace

RopeTable::RopeTable(int64_t max_positions, int head_dim, double theta) : half_(head_dim / 2) {
  cos_.resize(max_positions * half_);
  sin_.resize(max_positions * half_);
  for (int i = 0; i < half_; ++i) {
    // Inverse frequency rounded to fp32 as the training code keeps it; angles in double.
    const float inv_freq = static_cast<float>(std::pow(theta, -2.0 * i / head_dim));
    for (int64_t p = 0; p < max_positions; ++p) {
      const double angle = static_cast<double>(p) * inv_freq;
      cos_[p * half_ + i] = static_cast<float>(std::cos(angle));
      sin_[p * half_ + i] = static_cast<float>(std::sin(angle));
    }
  }
}

void RopeTable::Apply(float* x, int heads, int32_t position) const {
  const float* c = &cos_[static_cast<int64_t>(position) * half_];
  const float* s = &sin_[static_cast<int64_t>(position) * half_];
  for (int h = 0; h < heads; ++h) {
    float* v = x + h * 2 * half_;
    for (int i = 0; i < half_; ++i) {
      const float a = v[i], b = v[i + half_];
      v[i] = a * c[i] - b * s[i];
      v[i + half_] = b * c[i] + a * s[i];
    }
  }
}

void PagedAttention::Store(KvCache& cache, int layer, const std::vector<TokenPlacement>& tokens,
                           const float* k, const float* v, int64_t begin, int64_t end) const {
  const int bs = cache.shape().block_size;
  const int64_t row = static_cast<int64_t>(shape_.num_kv_heads) * shape_.head_dim;
  const bool bf16 = cache.shape().dtype == DType::kBF16;
  for (int64_t t = begin; t < end; ++t) {
    const int32_t pos = tokens[t].position;
    const int32_t block = tokens[t].block_table[pos / bs];
    if (bf16) {
      RoundToBf16(k + t * row, row, cache.KeyBf16(layer, block, pos % bs));
      RoundToBf16(v + t * row, row, cache.ValueBf16(layer, block, pos % bs));
    } else {
      std::memcpy(cache.Key(layer, block, pos % bs), k + t * row, row * sizeof(float));
      std::memcpy(cache.Value(layer, block, pos % bs), v + t * row, row * sizeof(float));
    }
  }
}

void PagedAttention::Attend(const KvCache& cache, int layer, const std::vector<TokenPlacement>& tokens,
                            const float* q, float* out) {
  const int nh = shape_.num_heads, nkv = shape_.num_kv_heads, hd = shape_.head_dim;
  const int group = nh / nkv;  // query head j uses KV group j / (n_h / n_g)
  const int bs = cache.shape().block_size;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const cpu::KernelSet& kernels = ActiveKernels();
  const int64_t kv_row = static_cast<int64_t>(nkv) * hd;
  const int64_t T = static_cast<int64_t>(tokens.size());
  // A bf16 cache: keys through the bf16-weight kernels, with the query rounded to bf16 where
  // the kernel set multiplies bf16 by bf16 (as for bf16 weights); values widened as read.
  const bool bf16 = cache.shape().dtype == DType::kBF16;
  const bool bf16_query = bf16 && UsesBf16Activations(DType::kBF16);
  const int64_t elem_size = DTypeSize(cache.shape().dtype);
  scores_.resize(pool_->num_threads());
  query_bf16_.resize(pool_->num_threads());
  // Query blocks: up to kQueryBlock consecutive tokens of one sequence (one block table,
  // positions one apart), as a prompt chunk brings them. A block reads each key and value row
  // once for all its queries; a decode step's tokens are blocks of one.
  block_start_.clear();
  for (int64_t t = 0; t < T; ++t) {
    const bool continues = t > 0 && tokens[t].block_table == tokens[t - 1].block_table &&
                           tokens[t].position == tokens[t - 1].position + 1 &&
                           t - block_start_.back() < kQueryBlock;
    if (!continues) block_start_.push_back(t);
  }
  const int64_t num_blocks = static_cast<int64_t>(block_start_.size());
  block_start_.push_back(T);
  // A work item is one query block's KV heads [k0, k1) with their query heads. It walks the
  // sequence's cache block by block and reads each slot's rows for all its heads together, in
  // address order; all heads per item once the batch gives every thread a few items, fewer
  // heads per item at small batches so both threads have work. The arithmetic per query and
  // head is the same either way (positions ascending), so neither split changes any bit.
  const int64_t wanted_items = int64_t{4} * pool_->num_threads();
  const int kv_per_item =
      static_cast<int>(std::clamp<int64_t>((num_blocks * nkv + wanted_items - 1) / wanted_items, 1, nkv));
  const int items_per_block = (nkv + kv_per_item - 1) / kv_per_item;
  pool_->ParallelForIndexed(num_blocks * items_per_block, [&](int thread, int64_t begin, int64_t end) {
    std::vector<float>& scratch = scores_[thread];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t qb = item / items_per_block;
      const int k0 = static_cast<int>(item % items_per_block) * kv_per_item;
      const int64_t t0 = block_start_[qb];
      const int nt = static_cast<int>(block_start_[qb + 1] - t0);  // queries: tokens [t0, t0 + nt)
      const int h0 = k0 * group, nq = (std::min(nkv, k0 + kv_per_item) - k0) * group;  // heads [h0, h0 + nq)
      const int32_t first = tokens[t0].position, last = tokens[t0 + nt - 1].position;
      const int64_t len = last + 1;  // the block's last query sees the most positions
      const int32_t* table = tokens[t0].block_table;
      // scores[(b * nq + j) * len + p]: query b, head j, position p (p <= first + b is used).
      scratch.resize(static_cast<size_t>(nt) * nq * len);
      float* scores = scratch.data();
      const auto row_of = [&](int b, int j) { return scores + (static_cast<int64_t>(b) * nq + j) * len; };
      const auto query_of = [&](int b) { return q + ((t0 + b) * nh + h0) * hd; };
      // q·k with the matmul kernels: a block's slots are rows kv_row elements apart, so one call
      // scores several positions of one head for all the block's queries.
      std::vector<uint16_t>& q16 = query_bf16_[thread];
      if (bf16_query) {
        q16.resize(static_cast<size_t>(nt) * nq * hd);
        for (int b = 0; b < nt; ++b) RoundToBf16(query_of(b), int64_t{nq} * hd, q16.data() + int64_t{b} * nq * hd);
      }
      // One of three kernel pairs, chosen once per item: bf16 keys × bf16 query, bf16 keys ×
      // fp32 query, fp32 keys × fp32 query.
      const auto score = [&](auto block_fn, auto row_fn, auto keys_of_block, const auto* queries, int64_t q_stride) {
        using Q = std::remove_cv_t<std::remove_pointer_t<decltype(queries)>>;
        const int per_call = kernels.rows_per_call[nt];
        const Q* xs[kQueryBlock];
        float* dst[kQueryBlock];
        for (int32_t p0 = 0; p0 <= last; p0 += bs) {
          const int slots = std::min(bs, last + 1 - p0);
          const auto* keys = keys_of_block(table[p0 / bs]);
          for (int j = 0; j < nq; ++j) {
            for (int b = 0; b < nt; ++b) {
              xs[b] = queries + b * q_stride + j * hd;
              dst[b] = row_of(b, j) + p0;
            }
            ScoreSlots(per_call, block_fn, row_fn, keys + ((h0 + j) / group) * hd, elem_size, kv_row, slots, hd, xs,
                       nt, dst);
          }
        }
      };
      const auto bf16_keys = [&](int32_t block) { return cache.KeyBf16(layer, block, 0); };
      if (bf16_query) {
        score(kernels.bf16x.block, kernels.bf16x.row, bf16_keys, q16.data(), int64_t{nq} * hd);
      } else if (bf16) {
        score(kernels.block[cpu::kWeightBf16], kernels.row[cpu::kWeightBf16], bf16_keys, query_of(0), int64_t{nh} * hd);
      } else {
        score(kernels.block[cpu::kWeightF32], kernels.row[cpu::kWeightF32],
              [&](int32_t block) { return cache.Key(layer, block, 0); }, query_of(0), int64_t{nh} * hd);
      }
      for (int b = 0; b < nt; ++b) {
        const int64_t n = first + b + 1;  // query b's positions
        for (int j = 0; j < nq; ++j) {
          kernels.softmax(row_of(b, j), n, scale);
        }
        float* o = out + ((t0 + b) * nh + h0) * hd;  // the item's heads are contiguous
        std::fill(o, o + static_cast<int64_t>(nq) * hd, 0.0f);
      }
      // Σ_p prob_p · v_p per query and head, block by block, positions ascending (the kernels
      // keep a head's output in registers across a block's slots). The slots every query of
      // the block sees go through the multi-query kernel, each value row read once; the later
      // queries' extra slots in the last block one query at a time. Same operations per
      // output element either way.
      const int kind = bf16 ? cpu::kWeightBf16 : cpu::kWeightF32;
      const cpu::WeightedRowsFn weighted = kernels.weighted_rows[kind];
      const cpu::WeightedRowsMultiFn weighted_multi = kernels.weighted_rows_multi[kind];
      const float* probs[kQueryBlock];
      float* outs[kQueryBlock];
      for (int32_t p0 = 0; p0 <= last; p0 += bs) {
        const int32_t block = table[p0 / bs];
        const unsigned char* values = bf16 ? reinterpret_cast<const unsigned char*>(cache.ValueBf16(layer, block, 0))
                                           : reinterpret_cast<const unsigned char*>(cache.Value(layer, block, 0));
        const int common = std::min(bs, first + 1 - p0);  // slots of the block's first query (may be <= 0)
        for (int j = 0; j < nq; ++j) {
          const unsigned char* head = values + ((h0 + j) / group) * hd * elem_size;
          for (int b = 0; b < nt; ++b) {
            probs[b] = row_of(b, j) + p0;
            outs[b] = out + ((t0 + b) * nh + h0 + j) * hd;
          }
          if (common > 0) {
            if (nt == 1) {
              weighted(head, kv_row, probs[0], common, hd, outs[0]);
            } else {
              weighted_multi(head, kv_row, probs, nt, common, hd, outs);
            }
          }
          const int done = std::max(common, 0);
          for (int b = 1; b < nt; ++b) {
            const int slots = std::min(bs, first + b + 1 - p0);
            if (slots > done) {
              weighted(head + done * kv_row * elem_size, kv_row, probs[b] + done, slots - done, hd, outs[b]);
            }
          }
        }
      }
    }
  });
}

}  // namespace moeserve
