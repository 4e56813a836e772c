#include "engine/kernels/cpu/panel_matmul.h"

#include <algorithm>
#include <cstring>

#include "engine/kernels/cpu/matmul.h"
#include "engine/kernels/cpu/panel_layout.h"
#include "engine/kernels/cpu/row_ranges.h"

namespace moeserve {

void PanelInput::Prepare(DType dtype, const float* x, int64_t x_stride, int64_t num_tokens, int64_t cols,
                         ThreadPool* pool) {
  const int64_t group = cpu::PanelGroup(dtype);
  dtype_ = dtype;
  stride_ = cpu::PanelGroups(cols, group) * group;
  const size_t need = static_cast<size_t>(num_tokens * stride_);
  if (dtype == DType::kBF16) {
    if (bf16_.size() < need) bf16_.resize(need);
    ForRowRanges(pool, num_tokens, stride_, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        uint16_t* out = bf16_.data() + t * stride_;
        RoundToBf16(x + t * x_stride, cols, out);
        std::fill(out + cols, out + stride_, uint16_t{0});
      }
    });
    return;
  }
  if (u8_.size() < need) u8_.resize(need);
  if (scales_.size() < static_cast<size_t>(num_tokens)) scales_.resize(num_tokens);
  const cpu::QuantizeU8Fn quantize = ActiveKernels().panels.quantize_u8;
  ForRowRanges(pool, num_tokens, stride_, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      uint8_t* out = u8_.data() + t * stride_;
      scales_[t] = quantize(x + t * x_stride, cols, out);
      std::fill(out + cols, out + stride_, uint8_t{128});  // q = 0: meets zero weights
    }
  });
}

void PanelInput::Gather(const PanelInput& from, const int32_t* tokens, int64_t n) {
  dtype_ = from.dtype_;
  stride_ = from.stride_;
  const size_t need = static_cast<size_t>(n * stride_);
  if (dtype_ == DType::kBF16) {
    if (bf16_.size() < need) bf16_.resize(need);
    for (int64_t i = 0; i < n; ++i) std::memcpy(bf16_.data() + i * stride_, from.bf16(tokens[i]), stride_ * 2);
    return;
  }
  if (u8_.size() < need) u8_.resize(need);
  if (scales_.size() < static_cast<size_t>(n)) scales_.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(u8_.data() + i * stride_, from.u8(tokens[i]), stride_);
    scales_[i] = *from.scales(tokens[i]);
  }
}

// Panels kMaxPanels at a time, and for each block of panels every token, as many at a time as
// the kernel set takes (kMaxPanelTokens, or kMaxAmxPanelTokens on AMX), so that the block (at most
// 4 · 16 rows) comes from memory once and from cache for the other tokens. A range that starts
// inside a panel computes the whole panel and keeps its rows.
void PanelMatMulRows(const WeightMatrix& m, const PanelInput& in, int64_t first_token, int64_t num_tokens, float* y,
                     int64_t y_stride, int64_t r0, int64_t r1, bool accumulate, const int32_t* y_index) {
  const cpu::PanelKernels& k = ActiveKernels().panels;
  const int64_t panel_bytes = m.ld * DTypeSize(m.dtype);
  const int64_t groups = cpu::PanelGroups(m.cols, cpu::PanelGroup(m.dtype));
  const bool int8 = m.dtype == DType::kI8;  // the kernel applies the scales (kernels.h)
  const int64_t step = k.panel_tokens;
  alignas(64) float out[cpu::kMaxAmxPanelTokens * cpu::kMaxPanelRows];
  for (int64_t pb = r0 / cpu::kPanelRows; pb * cpu::kPanelRows < r1; pb += cpu::kMaxPanels) {
    const int np = static_cast<int>(std::min<int64_t>(cpu::kMaxPanels, cpu::NumPanels(r1) - pb));
    const void* w = static_cast<const unsigned char*>(m.data) + pb * panel_bytes;
    const int64_t row0 = pb * cpu::kPanelRows;
    const int64_t lo = std::max(r0, row0), hi = std::min(r1, row0 + np * cpu::kPanelRows);
    for (int64_t t0 = 0; t0 < num_tokens; t0 += step) {
      const int nt = static_cast<int>(std::min<int64_t>(step, num_tokens - t0));
      const int64_t token = first_token + t0;
      if (int8) {
        const cpu::I8PanelScales scales{m.row_sums + row0, m.scales + row0, in.scales(token)};
        k.i8(w, panel_bytes, np, groups, in.u8(token), in.stride(), nt, scales, out);
      } else {
        k.bf16(w, panel_bytes, np, groups, in.bf16(token), in.stride(), nt, out);
      }
      for (int t = 0; t < nt; ++t) {
        float* yt = y + (y_index != nullptr ? y_index[t0 + t] : t0 + t) * y_stride;
        const float* from = out + t * cpu::kMaxPanelRows - row0;
        if (accumulate) {
          for (int64_t r = lo; r < hi; ++r) yt[r] += from[r];
        } else {
          std::memcpy(yt + lo, from + lo, (hi - lo) * sizeof(float));
        }
      }
    }
  }
}

}  // namespace moeserve
