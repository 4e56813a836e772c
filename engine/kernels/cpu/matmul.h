// Matrix kernels of the CPU backend: y = x · Wᵀ for a few token rows x against weight rows W
// (f32, bf16, f16 or int8-with-row-scales weights; fp32 activations and accumulation). The
// inner kernels (kernels.h) are chosen once at startup: AVX-512-BF16, else AVX-512F, else
// AVX2+FMA+F16C on x86, NEON on aarch64, a portable loop otherwise; MOESERVE_CPU_KERNELS pins
// one. Under AVX-512-BF16, bf16 weights meet activations rounded to bf16 (UsesBf16Activations).
#ifndef MOESERVE_ENGINE_BACKEND_CPU_MATMUL_H_
#define MOESERVE_ENGINE_BACKEND_CPU_MATMUL_H_

#include <cstdint>
#include <span>
#include <vector>

#include "engine/kernels/cpu/kernels.h"
#include "engine/kernels/cpu/thread_pool.h"
#include "engine/kernels/cpu/weight_matrix.h"

namespace moeserve {

// For rows r in [r0, r1) and tokens t < num_tokens:
//   y[t * y_stride + r] (+)= dot(W[r, :], x[t * x_stride .. + W.cols])
void MatMulRows(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t num_tokens,
                float* y, int64_t y_stride, int64_t r0, int64_t r1, bool accumulate);

// For rows r in [r0, r1): y[r * y_stride] += Σ_s scale_s[r] · dot(W_s[r, :len], vecs[s][:len]),
// where W_s's row r starts `r * row_stride` elements after bases[s] and scale_s = scales[s]
// (int8 row scales; scales null means 1). One reduction per row however many segments: the
// down projection of a token over its active experts' d-wide slices.
void SegmentedRowDots(DType dtype, const void* const* bases, const float* const* scales, const float* const* vecs,
                      int segments, int64_t len, int64_t row_stride, float* y, int64_t y_stride, int64_t r0,
                      int64_t r1);

// SegmentedRowDots for bf16 weights (no row scales) with the vectors already rounded to bf16
// (RoundToBf16), for callers that reuse them across row ranges; only where
// UsesBf16Activations(DType::kBF16).
void SegmentedRowDotsBf16(const void* const* bases, const uint16_t* const* vecs, int segments, int64_t len,
                          int64_t row_stride, float* y, int64_t y_stride, int64_t r0, int64_t r1);

// SegmentedRowDotsBf16 for a whole batch, expert-major (kernels.h, Bf16GroupedDotFn): experts
// ascending, expert a's rows at bases[a] and its entries [entry_begin[a], entry_begin[a + 1])
// (token entry_tokens[i], vector vecs[i * len .. + len]); token t has entries iff token_offsets[t + 1] >
// token_offsets[t]. For rows [r0, r1): y[t * y_token_stride + r] += the token's sum, with the
// bits SegmentedRowDotsBf16 gives over its entries, but each block of an expert's rows is read
// once for all the tokens that chose it. Returns false, doing nothing, where the kernel set
// has no such kernel for `len` (the caller then takes SegmentedRowDotsBf16 per token).
bool GroupedRowDotsBf16(const void* const* bases, const int32_t* entry_begin, int num_experts,
                        const int32_t* entry_tokens, const uint16_t* vecs, const int32_t* token_offsets,
                        int num_tokens, int64_t len, int64_t row_stride, float* y, int64_t y_token_stride, int64_t r0,
                        int64_t r1);

// out[i] = x[i] rounded to bf16 (nearest even), as the bf16 × bf16 kernels see it.
void RoundToBf16(const float* x, int64_t n, uint16_t* out);

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

// Every compiled kernel set this CPU can run, from portable to the best (the automatic choice
// is the last one).
std::vector<const cpu::KernelSet*> RunnableKernelSets();

// Whether the active kernel set has panel kernels for weights of this dtype (bf16, int8), so
// that matrices of it are worth packing in panels (panel_pack.h). MatMulRows and
// ParallelMatMul take panel matrices only where this holds.
bool UsesPanels(DType weights);
// Whether routed experts' down slices of this dtype are packed in panels: int8 wherever it has
// panels; bf16 only where the set says so (AMX), the grouped row kernel being faster elsewhere.
bool ExpertDownInPanels(DType weights);

// The kernel tables' index for a weight dtype.
cpu::WeightKind KindOf(DType d);

// Whether products with weights of this dtype round the activations to bf16 first (bf16
// weights under a set with bf16 × bf16 kernels; the spec's bf16 precision, deco.md §3.5).
bool UsesBf16Activations(DType weights);

// The kernel set in use, and its name ("avx512bf16", "avx512", "avx2", "neon" or "portable";
// the spellings MOESERVE_CPU_KERNELS takes).
const cpu::KernelSet& ActiveKernels();
const char* MatMulKernelName();

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_BACKEND_CPU_MATMUL_H_
