#include "engine/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/backend/cpu/matmul.h"

namespace moeserve {
namespace {

// out[s] = dot(keys[s * ld, :n], q) for s < slots.
void ScoreSlots(const cpu::KernelSet& k, const float* keys, int64_t ld, int slots, int n, const float* q, float* out) {
  const float* xs[1] = {q};
  const int per_call = k.rows_per_call[1];
  int s = 0;
  for (; s + per_call <= slots; s += per_call) k.block[cpu::kWeightF32](keys + s * ld, ld, n, xs, 1, out + s);
  for (; s < slots; ++s) k.row[cpu::kWeightF32](keys + s * ld, n, xs, 1, out + s);
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
  for (size_t t = 0; t < tokens.size(); ++t) {
    const int32_t pos = tokens[t].position;
    const int32_t block = tokens[t].block_table[pos / bs];
    std::memcpy(cache.Key(layer, block, pos % bs), k + t * row, row * sizeof(float));
    std::memcpy(cache.Value(layer, block, pos % bs), v + t * row, row * sizeof(float));
  }
}

void PagedAttention::Attend(const KvCache& cache, int layer, const std::vector<TokenPlacement>& tokens,
                            const float* q, float* out) {
  const int nh = shape_.num_heads, hd = shape_.head_dim;
  const int group = nh / shape_.num_kv_heads;
  const int bs = cache.shape().block_size;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const cpu::KernelSet& kernels = ActiveKernels();
  const int64_t kv_row = static_cast<int64_t>(shape_.num_kv_heads) * hd;
  scores_.resize(pool_->num_threads());
  const int64_t items = static_cast<int64_t>(tokens.size()) * nh;
  pool_->ParallelForIndexed(items, [&](int thread, int64_t begin, int64_t end) {
    std::vector<float>& scores = scores_[thread];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / nh;
      const int head = static_cast<int>(item % nh);
      const int kv_head = head / group;  // query head j uses KV group j / (n_h / n_g)
      const float* qh = q + t * nh * hd + head * hd;
      const int32_t last = tokens[t].position;
      const int32_t* table = tokens[t].block_table;
      scores.resize(last + 1);
      // q·k with the matmul kernels, a KV block at a time: the slots of a block are rows
      // `kv_row` floats apart, so one call scores several positions.
      for (int32_t p0 = 0; p0 <= last; p0 += bs) {
        const int slots = std::min(bs, last + 1 - p0);
        ScoreSlots(kernels, cache.Key(layer, table[p0 / bs], 0) + kv_head * hd, kv_row, slots, hd, qh, &scores[p0]);
      }
      float max_score = -INFINITY;
      for (int32_t p = 0; p <= last; ++p) {
        scores[p] *= scale;
        max_score = std::max(max_score, scores[p]);
      }
      double sum = 0;
      for (int32_t p = 0; p <= last; ++p) sum += scores[p] = std::exp(scores[p] - max_score);
      const float inv = static_cast<float>(1.0 / sum);
      float* o = out + t * nh * hd + head * hd;
      std::fill(o, o + hd, 0.0f);
      for (int32_t p = 0; p <= last; ++p) {
        const float* vp = cache.Value(layer, table[p / bs], p % bs) + kv_head * hd;
        const float w = scores[p] * inv;
        for (int i = 0; i < hd; ++i) o[i] += w * vp[i];
      }
    }
  });
}

}  // namespace moeserve
