#include "engine/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/kernels/cpu/matmul.h"

namespace moeserve {
namespace {

// out[s] = dot(keys[s * ld, :n], q) for s < slots, keys of `key_size` bytes per element:
// block(w, ld, n, xs, nt, out) and row(w, n, xs, nt, out) as in kernels.h, for query type Q.
template <class Q, class Block, class Row>
void ScoreSlots(int per_call, Block block, Row row, const void* keys, int64_t key_size, int64_t ld, int slots, int n,
                const Q* q, float* out) {
  const Q* xs[1] = {q};
  const unsigned char* base = static_cast<const unsigned char*>(keys);
  int s = 0;
  for (; s + per_call <= slots; s += per_call) block(base + s * ld * key_size, ld, n, xs, 1, out + s);
  for (; s < slots; ++s) row(base + s * ld * key_size, n, xs, 1, out + s);
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
                           const float* k, const float* v) const {
  const int bs = cache.shape().block_size;
  const int64_t row = static_cast<int64_t>(shape_.num_kv_heads) * shape_.head_dim;
  const bool bf16 = cache.shape().dtype == DType::kBF16;
  for (size_t t = 0; t < tokens.size(); ++t) {
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
  // A work item is one token's KV heads [k0, k1) with their query heads. It walks the token's
  // cache block by block and reads each slot's rows for all its heads together, in address
  // order; all heads per item once the batch gives every thread a few items, fewer heads per
  // item at small batches so both threads have work. The arithmetic per head is the same
  // either way (positions ascending), so the split does not change any bit.
  const int64_t wanted_items = int64_t{4} * pool_->num_threads();
  const int kv_per_item = static_cast<int>(std::clamp<int64_t>((T * nkv + wanted_items - 1) / wanted_items, 1, nkv));
  const int items_per_token = (nkv + kv_per_item - 1) / kv_per_item;
  pool_->ParallelForIndexed(T * items_per_token, [&](int thread, int64_t begin, int64_t end) {
    std::vector<float>& scratch = scores_[thread];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / items_per_token;
      const int k0 = static_cast<int>(item % items_per_token) * kv_per_item;
      const int h0 = k0 * group, nq = (std::min(nkv, k0 + kv_per_item) - k0) * group;  // heads [h0, h0 + nq)
      const int32_t last = tokens[t].position;
      const int64_t len = last + 1;
      const int32_t* table = tokens[t].block_table;
      scratch.resize(static_cast<size_t>(nq) * len + nq);
      float* scores = scratch.data();     // [nq][len]
      float* inv = scores + nq * len;     // [nq]: 1 / Σ exp
      const float* qt = q + (t * nh + h0) * hd;
      // q·k with the matmul kernels: a block's slots are rows kv_row elements apart, so one call
      // scores several positions of one head.
      std::vector<uint16_t>& q16 = query_bf16_[thread];
      if (bf16_query) {
        q16.resize(static_cast<size_t>(nq) * hd);
        RoundToBf16(qt, int64_t{nq} * hd, q16.data());
      }
      // One of three kernel pairs, chosen once per item: bf16 keys × bf16 query, bf16 keys ×
      // fp32 query, fp32 keys × fp32 query.
      const auto score = [&](auto block_fn, auto row_fn, auto keys_of_block, const auto* query) {
        const int per_call = kernels.rows_per_call[1];
        for (int32_t p0 = 0; p0 <= last; p0 += bs) {
          const int slots = std::min(bs, last + 1 - p0);
          const auto* keys = keys_of_block(table[p0 / bs]);
          for (int j = 0; j < nq; ++j) {
            ScoreSlots(per_call, block_fn, row_fn, keys + ((h0 + j) / group) * hd, elem_size, kv_row, slots, hd,
                       query + j * hd, &scores[j * len + p0]);
          }
        }
      };
      const auto bf16_keys = [&](int32_t block) { return cache.KeyBf16(layer, block, 0); };
      if (bf16_query) {
        score(kernels.bf16x.block, kernels.bf16x.row, bf16_keys, q16.data());
      } else if (bf16) {
        score(kernels.block[cpu::kWeightBf16], kernels.row[cpu::kWeightBf16], bf16_keys, qt);
      } else {
        score(kernels.block[cpu::kWeightF32], kernels.row[cpu::kWeightF32],
              [&](int32_t block) { return cache.Key(layer, block, 0); }, qt);
      }
      for (int j = 0; j < nq; ++j) {
        float* s = scores + j * len;
        float max_score = -INFINITY;
        for (int64_t p = 0; p < len; ++p) {
          s[p] *= scale;
          max_score = std::max(max_score, s[p]);
        }
        double sum = 0;
        for (int64_t p = 0; p < len; ++p) sum += s[p] = std::exp(s[p] - max_score);
        inv[j] = static_cast<float>(1.0 / sum);
      }
      float* o = out + (t * nh + h0) * hd;  // the item's heads are contiguous
      std::fill(o, o + static_cast<int64_t>(nq) * hd, 0.0f);
      for (int j = 0; j < nq; ++j) {
        float* p = scores + j * len;
        for (int64_t i = 0; i < len; ++i) p[i] *= inv[j];
      }
      // Σ_p prob_p · v_p per head, block by block, positions ascending (the kernel keeps a
      // head's output in registers across a block's slots).
      const cpu::WeightedRowsFn weighted = kernels.weighted_rows[bf16 ? cpu::kWeightBf16 : cpu::kWeightF32];
      for (int32_t p0 = 0; p0 <= last; p0 += bs) {
        const int slots = std::min(bs, last + 1 - p0);
        const int32_t block = table[p0 / bs];
        const void* values = bf16 ? static_cast<const void*>(cache.ValueBf16(layer, block, 0))
                                  : static_cast<const void*>(cache.Value(layer, block, 0));
        for (int j = 0; j < nq; ++j) {
          const int64_t head = ((h0 + j) / group) * hd;
          weighted(static_cast<const unsigned char*>(values) + head * elem_size, kv_row, &scores[j * len + p0], slots,
                   hd, o + j * hd);
        }
      }
    }
  });
}

}  // namespace moeserve
