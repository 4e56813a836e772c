// Matrix kernels of the CPU backend: y = x · Wᵀ for a few token rows x against weight rows W
// (f32 or bf16 weights, f32 activations and accumulation). Runtime dispatch picks AVX2+FMA
// when the CPU has it, a portable loop otherwise.
#ifndef MOESERVE_ENGINE_BACKEND_CPU_MATMUL_H_
#define MOESERVE_ENGINE_BACKEND_CPU_MATMUL_H_

#include <cstdint>
#include <span>

#include "engine/backend/cpu/thread_pool.h"
#include "engine/backend/cpu/weight_matrix.h"

namespace moeserve {

// For rows r in [r0, r1) and tokens t < num_tokens:
//   y[t * y_stride + r] (+)= dot(W[r, :], x[t * x_stride .. + W.cols])
void MatMulRows(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t num_tokens,
                float* y, int64_t y_stride, int64_t r0, int64_t r1, bool accumulate);

// For rows r in [r0, r1): y[r * y_stride] += Σ_s dot(W_s[r, :len], vecs[s][:len]), where
// W_s's row r starts `r * row_stride` elements after bases[s]. One reduction per row however
// many segments: the down projection of a token over its active experts' d-wide slices.
void SegmentedRowDots(DType dtype, const void* const* bases, const float* const* vecs, int segments, int64_t len,
                      int64_t row_stride, float* y, int64_t y_stride, int64_t r0, int64_t r1);

// One output of a parallel matmul: y[t, :W.rows] (+)= x[t, :] · Wᵀ.
struct MatMulJob {
  const WeightMatrix* w;
  const float* x;
  int64_t x_stride;
  float* y;
  int64_t y_stride;
  bool accumulate = false;
};

// Runs several matmuls over the same tokens as one parallel region, split by weight rows, so
// that small projections (q, k, v; gate, up) share a single fork/join.
void ParallelMatMul(ThreadPool& pool, std::span<const MatMulJob> jobs, int64_t num_tokens);

// Name of the kernel family in use ("avx2-fma" or "portable").
const char* MatMulKernelName();

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_BACKEND_CPU_MATMUL_H_
