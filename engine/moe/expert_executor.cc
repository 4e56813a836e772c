#include "engine/moe/expert_executor.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/kernels/cpu/matmul.h"
#include "engine/kernels/cpu/f64_sums.h"
#include "engine/kernels/cpu/panel_layout.h"
#include "engine/kernels/cpu/row_ranges.h"

namespace moeserve {
namespace {

inline void AddBias(float* v, const float* b, int64_t n) {
  for (int64_t j = 0; j < n; ++j) v[j] += b[j];
}

// Applies the expert activation to one token's block in place: v holds the activation input
// (gate if gated, else up) and becomes act(v) ⊙ u (gated) or act(v). Then scales by weight.
// SiLU and GELU go through the kernel set's vectorised ones (kernels.h).
void Activate(const ExpertBank& bank, float mean, float* v, const float* u, float weight) {
  const int64_t d = bank.width;
  switch (bank.act) {
    case ExpertAct::kNormSilu:
    case ExpertAct::kNormSiluNoMean: {
      const float shift = bank.act == ExpertAct::kNormSilu ? mean : 0.0f;
      for (int64_t j = 0; j < d; ++j) v[j] -= shift;
      const double sq = SumSquaresF64(v, d);
      const float inv = static_cast<float>(1.0 / std::sqrt(sq / d + bank.epsilon));
      for (int64_t j = 0; j < d; ++j) v[j] = v[j] * inv * bank.act_norm_weight[j];
      ActiveKernels().silu(v, d);
      break;
    }
    case ExpertAct::kNormSiluNorms:
      for (int64_t j = 0; j < d; ++j) v[j] -= mean;
      ActiveKernels().silu(v, d);
      break;
    case ExpertAct::kSilu:
      ActiveKernels().silu(v, d);
      break;
    case ExpertAct::kGelu:
      ActiveKernels().gelu(v, d);
      break;
  }
  if (u != nullptr) {
    for (int64_t j = 0; j < d; ++j) v[j] *= u[j];
  }
  for (int64_t j = 0; j < d; ++j) v[j] *= weight;
}

// Whether the up (and gate) rows are packed in panels, so that the layer's input is prepared
// once for every expert.
bool UpInPanels(const ExpertBank& bank) {
  return bank.up.panels && (!bank.gated() || (bank.gate.panels && bank.gate.dtype == bank.up.dtype));
}

}  // namespace

void ExpertExecutor::UpAndActivate(const ExpertBank& bank, const float* m, int e, int slot) {
  const int64_t H = bank.hidden, d = bank.width;
  const int32_t begin = groups_.offsets[e], n = groups_.offsets[e + 1] - begin;
  ThreadBuffers& buf = thread_buffers_[slot];
  buf.u.resize(static_cast<size_t>(n) * d);
  float* h = &hidden_[static_cast<size_t>(begin) * d];
  // The activation input lands directly in the hidden buffer, the other factor in u.
  if (UpInPanels(bank)) {
    // Panel up rows take the layer's input prepared once (Run): an expert with one token
    // reads that token's row in place, one with several a gathered copy of theirs.
    const PanelInput* in = &up_input_;
    int64_t first = groups_.slot_token[begin];
    if (n > 1) {
      buf.up_input.Gather(up_input_, &groups_.slot_token[begin], n);
      in = &buf.up_input;
      first = 0;
    }
    if (bank.gated()) {
      PanelMatMulRows(bank.Gate(e), *in, first, n, h, d, 0, d, false);
      PanelMatMulRows(bank.Up(e), *in, first, n, buf.u.data(), d, 0, d, false);
    } else {
      PanelMatMulRows(bank.Up(e), *in, first, n, h, d, 0, d, false);
    }
  } else {
    buf.x.resize(static_cast<size_t>(n) * H);
    for (int32_t i = 0; i < n; ++i) {
      std::memcpy(&buf.x[i * H], m + groups_.slot_token[begin + i] * H, H * sizeof(float));
    }
    if (bank.gated()) {
      MatMulRows(bank.Gate(e), buf.x.data(), H, n, h, d, 0, d, false);
      MatMulRows(bank.Up(e), buf.x.data(), H, n, buf.u.data(), d, 0, d, false);
    } else {
      MatMulRows(bank.Up(e), buf.x.data(), H, n, h, d, 0, d, false);
    }
  }
  const std::vector<float>& act_bias = bank.gated() ? bank.gate_bias : bank.up_bias;
  for (int32_t i = 0; i < n; ++i) {
    if (!act_bias.empty()) AddBias(h + i * d, &act_bias[e * d], d);
    if (bank.gated() && !bank.up_bias.empty()) AddBias(&buf.u[i * d], &bank.up_bias[e * d], d);
  }
  for (int32_t i = 0; i < n; ++i) {
    const int32_t token = groups_.slot_token[begin + i];
    const float mean = bank.NeedsMean() ? token_mean_[token] : 0.0f;
    Activate(bank, mean, h + i * d, bank.gated() ? &buf.u[i * d] : nullptr, groups_.slot_weight[begin + i]);
  }
}

void ExpertExecutor::DownPanels(const ExpertBank& bank, int64_t r0, int64_t r1, float* y) {
  // Experts ascending, so every token meets its experts in its own (ascending) entry order
  // whatever else is in the batch: y += expert 1's rows, then expert 2's, ... The results go
  // straight into the tokens' rows of y.
  for (const int e : groups_.active) {
    const int32_t begin = groups_.offsets[e], n = groups_.offsets[e + 1] - begin;
    PanelMatMulRows(bank.Down(e), down_input_, begin, n, y, bank.hidden, r0, r1, /*accumulate=*/true,
                    &groups_.slot_token[begin]);
  }
}

void ExpertExecutor::Run(const ExpertBank& bank, const float* m, int64_t num_tokens, const Routing& routing,
                         float* y, const MatMulJob* then) {
  const int E = bank.num_experts;
  const int64_t H = bank.hidden, d = bank.width;
  // Group entries by expert (counting sort; tokens stay in ascending order within a group).
  groups_.Build(routing, E);
  const size_t entries = routing.experts.size();
  if (groups_.active.empty()) {
    if (then != nullptr) ParallelMatMul(*pool_, std::span<const MatMulJob>(then, 1), num_tokens);
    return;
  }

  if (bank.NeedsMean()) {
    token_mean_.resize(num_tokens);
    ForRowRanges(pool_, num_tokens, H, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        token_mean_[t] = static_cast<float>(DotF64(bank.mean_vector.data(), m + t * H, H));
      }
    });
  }
  hidden_.resize(entries * d);
  thread_buffers_.resize(pool_->num_threads());
  if (UpInPanels(bank)) up_input_.Prepare(bank.up.dtype, m, H, num_tokens, H, pool_);

  // Up (and gate) projections with the activation: work split by expert (the pool hands out
  // chunks of experts as threads come free, which evens out their different token counts).
  const int64_t num_active = static_cast<int64_t>(groups_.active.size());
  pool_->ParallelForIndexed(num_active, [&](int slot, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) UpAndActivate(bank, m, groups_.active[i], slot);
  });
  // Down projection, per token over its experts' d-wide slices in ascending expert order (one
  // reduction per output row), split across threads by output row so no two threads write the
  // same output. Rows go in tiles small enough for the tile's active slices to stay in L2
  // while every token of the batch passes over them: the union of experts is read from memory
  // once per step, not once per token.
  // Down slices packed in panels: the activations are prepared once per layer, then each
  // active expert's rows meet all its tokens (expert-major, DownPanels).
  const bool panels = bank.down.panels;
  if (panels) down_input_.Prepare(bank.down.dtype, hidden_.data(), d, static_cast<int64_t>(entries), d, pool_);
  const bool int8 = bank.down.dtype == DType::kI8;
  segment_base_.resize(entries);
  segment_vec_.resize(entries);
  segment_scale_.resize(entries);
  for (size_t i = 0; !panels && i < entries; ++i) {
    const WeightMatrix slice = bank.Down(routing.experts[i]);
    segment_base_[i] = slice.data;
    segment_scale_[i] = slice.scales;
    segment_vec_[i] = &hidden_[static_cast<size_t>(groups_.slot_of_entry[i]) * d];
  }
  // Under bf16 × bf16 kernels the activations are rounded once here, not once per row tile.
  const bool bf16x = !panels && UsesBf16Activations(bank.down.dtype);
  if (bf16x) {
    hidden_bf16_.resize(hidden_.size());
    ForRowRanges(pool_, static_cast<int64_t>(entries), d, [&](int64_t e0, int64_t e1) {
      RoundToBf16(&hidden_[e0 * d], (e1 - e0) * d, &hidden_bf16_[e0 * d]);
    });
    segment_vec_bf16_.resize(entries);
    for (size_t i = 0; i < entries; ++i) {
      segment_vec_bf16_[i] = &hidden_bf16_[static_cast<size_t>(groups_.slot_of_entry[i]) * d];
    }
  }
  const int64_t row_stride = bank.Down(0).ld;
  // Where experts are shared by several tokens, the down projection goes expert-major: a block
  // of an expert's rows is loaded once for all its tokens instead of once per token
  // (moe_layer_bench, batch 16: the routed layer 332 -> 266 us). Same bits per token either
  // way (kernels.h).
  const bool grouped = bf16x && (down_order_ == DownOrder::kAuto ? entries >= 2 * static_cast<size_t>(num_active)
                                                                 : down_order_ == DownOrder::kExpertMajor);
  if (grouped) {
    grouped_base_.resize(num_active);
    grouped_begin_.resize(num_active + 1);
    for (int64_t a = 0; a < num_active; ++a) {
      grouped_base_[a] = bank.Down(groups_.active[a]).data;
      grouped_begin_[a] = groups_.offsets[groups_.active[a]];
    }
    grouped_begin_[num_active] = static_cast<int32_t>(entries);
  }
  const float* down_bias = bank.down_bias.empty() ? nullptr : bank.down_bias.data();
  constexpr int64_t kDownRowTile = 32;
  // The routed experts' sums (and their down bias) for output rows [r0, r1).
  const auto routed_down = [&](int64_t r0, int64_t r1) {
    if (panels) {
      DownPanels(bank, r0, r1, y);
    } else if (!grouped || !GroupedRowDotsBf16(grouped_base_.data(), grouped_begin_.data(), static_cast<int>(num_active),
                                        groups_.slot_token.data(), hidden_bf16_.data(), routing.offsets.data(),
                                        static_cast<int>(num_tokens), d, row_stride, y, H, r0, r1)) {
      for (int64_t tile = r0; tile < r1; tile += kDownRowTile) {
        const int64_t tile_end = std::min(r1, tile + kDownRowTile);
        for (int64_t t = 0; t < num_tokens; ++t) {
          const int32_t begin = routing.offsets[t], n = routing.offsets[t + 1] - begin;
          if (bf16x) {
            SegmentedRowDotsBf16(&segment_base_[begin], &segment_vec_bf16_[begin], n, d, row_stride, y + t * H, 1, tile,
                                 tile_end);
          } else {
            SegmentedRowDots(bank.down.dtype, &segment_base_[begin], int8 ? &segment_scale_[begin] : nullptr,
                             &segment_vec_[begin], n, d, row_stride, y + t * H, 1, tile, tile_end);
          }
        }
      }
    }
    if (down_bias == nullptr) return;
    // Σ_e w_e·b_down,e in the token's own entry order (independent of the batch), added after
    // the token's dot products.
    for (int64_t t = 0; t < num_tokens; ++t) {
      const int32_t begin = routing.offsets[t], n = routing.offsets[t + 1] - begin;
      float* yt = y + t * H;
      for (int64_t r = r0; n > 0 && r < r1; ++r) {
        float s = 0.0f;
        for (int32_t i = begin; i < begin + n; ++i) s += routing.weights[i] * down_bias[routing.experts[i] * H + r];
        yt[r] += s;
      }
    }
  };
  const bool then_panels = then != nullptr && then->w->panels;
  if (then_panels) then_input_.Prepare(then->w->dtype, then->x, then->x_stride, num_tokens, then->w->cols, pool_);
  // Panel slices (ours or the `then` job's) are split between threads in whole panels.
  const int64_t unit = panels || then_panels ? cpu::kPanelRows : 1;
  const int64_t units = (H + unit - 1) / unit;
  // Panel down slices at a few tokens: chunks of at least half of each thread's share. A
  // chunk walks every active expert's slice, and guided chunks of one or two panels cut those
  // into runs of 1-2 KB that the prefetchers never catch up with (DECO-0.1B int8 batch 1: MoE
  // layers 1.21-1.32 -> 1.06-1.17 ms per step). Larger batches compute enough per row to keep the
  // guided split's even finish; the row-major bf16 kernel showed no gain.
  const int64_t min_chunk = panels && num_tokens <= 4 ? units / (int64_t{2} * pool_->num_threads()) : 1;
  pool_->ParallelFor(units, [&](int64_t u0, int64_t u1) {
    const int64_t r0 = u0 * unit, r1 = std::min(H, u1 * unit);
    routed_down(r0, r1);
    if (then_panels) {
      PanelMatMulRows(*then->w, then_input_, 0, num_tokens, then->y, then->y_stride, r0, r1, then->accumulate);
    } else if (then != nullptr) {
      MatMulRows(*then->w, then->x, then->x_stride, num_tokens, then->y, then->y_stride, r0, r1, then->accumulate);
    }
  }, min_chunk);
}

}  // namespace moeserve
