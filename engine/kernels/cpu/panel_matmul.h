// Matmuls against weights packed in panels (panel_layout.h), on the active kernel set's panel
// kernels: activations are prepared once (rounded to bf16, or quantised to int8 per token)
// and then serve any number of row ranges and matrices of that dtype and width.
#ifndef MOESERVE_ENGINE_KERNELS_CPU_PANEL_MATMUL_H_
#define MOESERVE_ENGINE_KERNELS_CPU_PANEL_MATMUL_H_

#include <cstdint>
#include <vector>

#include "engine/kernels/cpu/weight_matrix.h"

namespace moeserve {

class ThreadPool;

// Token rows in the form a panel kernel takes, zero-padded to whole groups: bf16 bits, or
// unsigned bytes q + 128 with one scale per token (symmetric int8, scale = max|x| / 127).
// Buffers grow to the largest batch and are reused.
class PanelInput {
 public:
  // Prepares x[t * x_stride .. + cols] for t < num_tokens, for panel weights of `dtype`; with
  // a pool, the tokens of a prompt or a large batch are split across it (row_ranges.h).
  void Prepare(DType dtype, const float* x, int64_t x_stride, int64_t num_tokens, int64_t cols,
               ThreadPool* pool = nullptr);
  // Row i becomes `from`'s prepared row tokens[i], for i < n (the same bits as preparing it).
  void Gather(const PanelInput& from, const int32_t* tokens, int64_t n);

  DType dtype() const { return dtype_; }
  int64_t stride() const { return stride_; }  // elements from one token to the next
  const uint16_t* bf16(int64_t t) const { return bf16_.data() + t * stride_; }
  const uint8_t* u8(int64_t t) const { return u8_.data() + t * stride_; }
  const float* scales(int64_t t) const { return scales_.data() + t; }

 private:
  DType dtype_ = DType::kBF16;
  int64_t stride_ = 0;
  std::vector<uint16_t> bf16_;
  std::vector<uint8_t> u8_;
  std::vector<float> scales_;
};

// For rows r in [r0, r1) of the panel matrix m and tokens t < num_tokens of `in` from
// first_token on: y[o(t) * y_stride + r] (+)= dot(W[r, :], token), where o(t) is t, or
// y_index[t] where given (scattering the results straight into other rows, e.g. a group of an
// expert's tokens into the batch's rows). Bits per (row, token) do not depend on the range, the
// tokens beside it or the call (kernels.h, PanelKernels).
void PanelMatMulRows(const WeightMatrix& m, const PanelInput& in, int64_t first_token, int64_t num_tokens, float* y,
                     int64_t y_stride, int64_t r0, int64_t r1, bool accumulate, const int32_t* y_index = nullptr);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_KERNELS_CPU_PANEL_MATMUL_H_
