// The inner dot-product kernels of the CPU backend, one set per instruction set, chosen once
// at startup (matmul.cc). Weights are f32, bf16, f16 or int8 (raw integers: the caller
// applies row scales); activations and accumulation are fp32. A set may also carry kernels for
// bf16 weights × bf16 activations (AVX-512-BF16's vdpbf16ps: two products per lane and no
// widening of the weights), which matmul.cc prefers for bf16 weights: it rounds the
// activations to bf16 (nearest-even) once per call. That is the precision of the spec's bf16
// mode (deco.md §3.5: weights and activations bf16), with products exact and sums in fp32.
//
// Every kernel accumulates each (row, token) pair in one fixed order: lane-wide chunks in
// ascending order into one accumulator, a horizontal sum, then the scalar tail. The order does
// not depend on how many rows or tokens share a call, so a token's result is the same whatever
// else is in the batch: batched, chunked and single-token runs agree bit for bit under one
// kernel set.
#ifndef MOESERVE_ENGINE_BACKEND_CPU_KERNELS_H_
#define MOESERVE_ENGINE_BACKEND_CPU_KERNELS_H_

#include <cstdint>

namespace moeserve::cpu {

// Weight element types, in the order of KernelSet's tables.
enum WeightKind { kWeightF32 = 0, kWeightBf16 = 1, kWeightF16 = 2, kWeightI8 = 3, kNumWeightKinds = 4 };

constexpr int kMaxTokens = 4;  // tokens per DotBlock call

// The panel layout's shape (panel_layout.h) and the panel kernels' largest tile.
constexpr int64_t kPanelRows = 16;
constexpr int64_t kPanelGroupBytes = 64;  // one group of a whole panel: one zmm load
constexpr int kMaxPanels = 4;
constexpr int kMaxPanelTokens = 6;
constexpr int kMaxAmxPanelTokens = 64;  // the AMX panel kernels' (four tiles of 16 rows)
constexpr int64_t kMaxPanelRows = kMaxPanels * kPanelRows;

// out[r * nt + t] = dot(W[r, :n], xs[t][:n]) for r < rows_per_call(nt), t < nt (1..kMaxTokens).
// Row r starts `r * ld` elements after w.
using DotBlockFn = void (*)(const void* w, int64_t ld, int64_t n, const float* const* xs, int nt, float* out);
// The same for exactly one row (the tail of a row range).
using DotRowFn = void (*)(const void* w, int64_t n, const float* const* xs, int nt, float* out);
// For rows k < 4: out[k] = Σ_s scale_s · dot(W_s[row k, :len], v_s[:len]), with W_s's row k at
// `k * row_stride` elements after w[s]; scale_s = scales[s][k], or 1 when scales is null.
// `rows` (1..4) rows at a time; segments are accumulated in the given order.
using SegmentedDotFn = void (*)(const void* const* w, const float* const* v, const float* const* scales,
                                int segments, int64_t len, int64_t row_stride, int rows, float* out);

// out[i] += Σ_s weights[s] · V[s, i] for i < n, row s of V `s * ld` elements after v, slots in
// ascending order (attention's probability-weighted sum of value rows; int8 rows unscaled).
using WeightedRowsFn = void (*)(const void* v, int64_t ld, const float* weights, int slots, int64_t n, float* out);
// WeightedRowsFn for nq <= kMaxWeightedQueries weight vectors at once: outs[q][c] +=
// Σ_s weights[q][s] · v[s·ld + c]. Each row is read once for all of them; every output element
// gets the same operations in the same order as from WeightedRowsFn, so the two agree bit for bit.
constexpr int kMaxWeightedQueries = 4;
using WeightedRowsMultiFn = void (*)(const void* v, int64_t ld, const float* const* weights, int nq, int slots,
                                     int64_t n, float* const* outs);

// Attention's softmax over one query's scores, in place: s[p] = exp(scale · s[p] − m) / Σ with
// m the largest scaled score, p < n (n >= 1). exp is a polynomial (within 2 ulp of the true
// value, exactly 1 at the maximum), Σ in fp64. A row's result depends only on its own n values.
using SoftmaxFn = void (*)(float* s, int64_t n, float scale);

// SiLU in place, v[i] = v[i]·σ(v[i]) for i < n, from the softmax's polynomial exp (within a
// few ulp). An element's result depends only on its value.
using SiluFn = void (*)(float* v, int64_t n);
// The exact-erf GELU in place, v[i] = v[i]·Φ(v[i]) (not the tanh approximation), within a few
// ulp; an element's result depends only on its value.
using GeluFn = void (*)(float* v, int64_t n);

// Block and one-row kernels as above, for bf16 weights and bf16 activations (raw bits).
using Bf16DotBlockFn = void (*)(const void* w, int64_t ld, int64_t n, const uint16_t* const* xs, int nt, float* out);
using Bf16DotRowFn = void (*)(const void* w, int64_t n, const uint16_t* const* xs, int nt, float* out);
// For rows r in [r0, r1): y[r * y_stride] += Σ_s dot(W_s[row r, :len], v_s[:len]), with W_s's
// row r at `r * row_stride` elements after w[s]; segments accumulated in the given order (bf16
// weights carry no row scales). The whole row range in one call, so the kernel chooses how
// many rows share each pass over the vectors.
using Bf16SegmentedDotFn = void (*)(const void* const* w, const uint16_t* const* v, int segments, int64_t len,
                                    int64_t row_stride, int64_t r0, int64_t r1, float* y, int64_t y_stride);
// out[i] = the bf16 (round to nearest even) of x[i], i < n.
using ToBf16Fn = void (*)(const float* x, int64_t n, uint16_t* out);
// The segmented dot of a whole batch, taken expert-major: experts a < num_experts in ascending
// order, expert a's rows at bases[a] (row r `r * row_stride` elements on), its entries
// [entry_begin[a], entry_begin[a + 1]) each a token (entry_tokens[i]) and a vector (the len
// elements at vecs + i * len). For rows
// r in [r0, r1) and every token t with entries (token_offsets[t + 1] > token_offsets[t]):
//   y[t * y_token_stride + r] += Σ over t's entries, in expert order, of dot(W_a[row r, :len], vec).
// Bit for bit what the segmented kernel gives each token over its own entries in that order.
// A block of an expert's rows is loaded once for all its tokens. Rows go in tiles of
// `tile_rows`; `acc` is 64-byte aligned scratch of num_tokens · tile_rows · 16 floats (one
// fp32 lane accumulator per token and row of a tile). Returns false, doing nothing, for a
// `len` it has no kernel for.
using Bf16GroupedDotFn = bool (*)(const void* const* bases, const int32_t* entry_begin, int num_experts,
                                  const int32_t* entry_tokens, const uint16_t* vecs, const int32_t* token_offsets,
                                  int num_tokens, int64_t len, int64_t row_stride, int64_t r0, int64_t r1, float* y,
                                  int64_t y_token_stride, int64_t tile_rows, float* acc);

// Panel kernels: weights in the panel layout (panel_layout.h), `np` (1..kMaxPanels) panels
// from `panels` on, `panel_bytes` apart, each of `groups` groups; `nt` (1..the set's
// panel_tokens)
// tokens, token t's activations at x + t · x_stride, padded with zeros to whole groups. For row
// i < 16 of panel p:
//   out[t · kMaxPanelRows + p · 16 + i] = the row's dot with token t, groups in ascending order.
// bf16: weights × activations rounded to bf16, fp32 sums (vdpbf16ps). int8: raw int8 weights ×
// activations as unsigned bytes u = q + 128 (QuantizeU8), exact int32 sums (vpdpbusd), then
//   (float)(sum − 128 · row_sums[row]) · row_scales[row] · x_scales[t]
// with row_sums and row_scales indexed from the first panel's first row and padded to whole
// panels.
using Bf16PanelFn = void (*)(const void* panels, int64_t panel_bytes, int np, int64_t groups, const uint16_t* x,
                             int64_t x_stride, int nt, float* out);
struct I8PanelScales {
  const int32_t* row_sums;
  const float* row_scales;
  const float* x_scales;
};
using I8PanelFn = void (*)(const void* panels, int64_t panel_bytes, int np, int64_t groups, const uint8_t* x,
                           int64_t x_stride, int nt, const I8PanelScales& scales, float* out);
// One token's symmetric int8 quantisation for the int8 panel kernels: out[c] = q + 128 with
// q = round(x[c] · 127 / max|x|) (nearest even), c < n; returns the scale max|x| / 127 (0 for an
// all-zero x, whose bytes are all 128).
using QuantizeU8Fn = float (*)(const float* x, int64_t n, uint8_t* out);
struct PanelKernels {
  Bf16PanelFn bf16 = nullptr;
  I8PanelFn i8 = nullptr;
  QuantizeU8Fn quantize_u8 = nullptr;  // present with i8
  int panel_tokens = kMaxPanelTokens;    // the most tokens one call takes
  // Whether bf16 expert down slices go in panels too (else the grouped row kernel takes them).
  bool bf16_expert_down = false;
};

// Bf16 × bf16 kernels; a set without them has all of them null.
struct Bf16ActivationKernels {
  Bf16DotBlockFn block = nullptr;
  Bf16DotRowFn row = nullptr;
  Bf16SegmentedDotFn segmented = nullptr;
  ToBf16Fn to_bf16 = nullptr;
  Bf16GroupedDotFn grouped = nullptr;
};

struct KernelSet {
  const char* name;
  int rows_per_call[kMaxTokens + 1];  // rows DotBlock handles for nt tokens (index nt)
  DotBlockFn block[kNumWeightKinds];
  DotRowFn row[kNumWeightKinds];
  SegmentedDotFn segmented[kNumWeightKinds];
  WeightedRowsFn weighted_rows[kNumWeightKinds];
  WeightedRowsMultiFn weighted_rows_multi[kNumWeightKinds];
  SoftmaxFn softmax;
  SiluFn silu;
  GeluFn gelu;
  Bf16ActivationKernels bf16x;  // used for bf16 weights where present
  PanelKernels panels;          // used for weights packed in panels where present
};

// Each returns nullptr when the set was not compiled for this architecture.
const KernelSet* PortableKernels();
const KernelSet* Avx2Kernels();
const KernelSet* Avx512Kernels();
const KernelSet* Avx512Bf16Kernels();  // AVX-512F + BW + VL + BF16 + VNNI
const KernelSet* Avx512AmxKernels();   // the same with AMX (BF16, INT8) for the panels
const KernelSet* NeonKernels();

}  // namespace moeserve::cpu

#endif  // MOESERVE_ENGINE_BACKEND_CPU_KERNELS_H_
