// AVX-512-BF16 kernels: the AVX-512F set, plus bf16-weight × bf16-activation kernels on
// vdpbf16ps (kernels.h). Each vdpbf16ps multiplies 32 bf16 pairs into 16 fp32 lanes (lane j
// takes elements 2j and 2j+1, products exact, sums in fp32), so a bf16 weight row is read
// straight into the multiply with no widening, at twice the products per instruction of the
// fp32 FMA kernels. This file is compiled with -mavx512f -mavx512bw -mavx512vl -mavx512bf16
// -mfma -mf16c and runs only after the CPU check in matmul.cc.
#include "engine/kernels/cpu/kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BF16__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__)
#include "engine/kernels/cpu/isa_avx512.h"
#include "engine/kernels/cpu/panel_kernels.h"

namespace moeserve::cpu {
namespace {

constexpr int kPairLanes = 32;  // bf16 elements per vdpbf16ps

using Pairs = __m512bh;

// How far ahead of the read position a row stream is prefetched. These kernels take a row in
// about half the time of the fp32-activation ones, so memory latency must be covered further
// ahead: 8 KiB (single-thread LM-head pass, 1 / 16 tokens: 12 / 61 GMAC/s at 1 KiB, 16 / 78 at
// 8 KiB; the fp32-activation kernels gain nothing from it).
constexpr int64_t kPrefetchElements = 8192 / 2;

Pairs LoadPairs(const uint16_t* p) { return (Pairs)_mm512_loadu_si512(p); }
// The first `count` (< 32) elements, the rest zero: a zero weight times a zero activation
// adds nothing, so a row's tail goes through the same vector accumulator as its body.
Pairs LoadPairsTail(const uint16_t* p, int64_t count) {
  return (Pairs)_mm512_maskz_loadu_epi16(static_cast<__mmask32>((1u << count) - 1u), p);
}

// One 32-element step of NR rows × NT tokens at column i (count < 32 on the tail step).
// Every (row, token) pair accumulates its steps in ascending order into one accumulator,
// whatever NR and NT: block and one-row calls give the same bits.
template <int NR, int NT, bool kTail>
inline void DotStep(const uint16_t* w, int64_t ld, const uint16_t* const* xs, int64_t i, int64_t count,
                    __m512 (&acc)[NR][NT]) {
  Pairs x[NT];
  for (int t = 0; t < NT; ++t) {
    x[t] = kTail ? LoadPairsTail(xs[t] + i, count) : LoadPairs(xs[t] + i);
    asm("" : "+v"(x[t]));  // keep the activations in registers, not re-read per row
  }
  for (int r = 0; r < NR; ++r) {
    const uint16_t* row = w + r * ld + i;
    if (!kTail) __builtin_prefetch(row + kPrefetchElements);
    const Pairs wr = kTail ? LoadPairsTail(row, count) : LoadPairs(row);
    for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wr, x[t]);
  }
}

template <int NR, int NT>
void Bf16DotBlock(const uint16_t* w, int64_t ld, int64_t n, const uint16_t* const* xs, float* out) {
  __m512 acc[NR][NT];
  for (int r = 0; r < NR; ++r) {
    for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  const int64_t nv = n - n % kPairLanes;
  for (int64_t i = 0; i < nv; i += kPairLanes) DotStep<NR, NT, false>(w, ld, xs, i, kPairLanes, acc);
  if (nv < n) DotStep<NR, NT, true>(w, ld, xs, nv, n - nv, acc);
  for (int r = 0; r < NR; ++r) {
    for (int t = 0; t < NT; ++t) out[r * NT + t] = _mm512_reduce_add_ps(acc[r][t]);
  }
}

template <int NR>
void Bf16BlockAny(const uint16_t* w, int64_t ld, int64_t n, const uint16_t* const* xs, int nt, float* out) {
  switch (nt) {
    case 1: return Bf16DotBlock<NR, 1>(w, ld, n, xs, out);
    case 2: return Bf16DotBlock<NR, 2>(w, ld, n, xs, out);
    case 3: return Bf16DotBlock<NR, 3>(w, ld, n, xs, out);
    default: return Bf16DotBlock<NR, 4>(w, ld, n, xs, out);
  }
}

void Bf16Block(const void* w, int64_t ld, int64_t n, const uint16_t* const* xs, int nt, float* out) {
  Bf16BlockAny<Avx512Rows<1>::value>(static_cast<const uint16_t*>(w), ld, n, xs, nt, out);
}

void Bf16Row(const void* w, int64_t n, const uint16_t* const* xs, int nt, float* out) {
  Bf16BlockAny<1>(static_cast<const uint16_t*>(w), 0, n, xs, nt, out);
}

// Rows [r, r + R) of the segmented dot. R accumulators are independent chains, so R = 16
// hides vdpbf16ps's latency (4 rows would leave the unit waiting on each row's last result).
// kTail: len is not a multiple of 32. A separate instance, because the tail's code alone makes
// the compiler keep the accumulators in memory across segments (twice the instructions).
template <int R, bool kTail>
void Bf16SegmentedRows(const void* const* w, const uint16_t* const* v, int segments, int64_t len, int64_t row_stride,
                       int64_t r, float* y, int64_t y_stride) {
  const int64_t nv = len - len % kPairLanes;
  __m512 acc[R];
  for (int k = 0; k < R; ++k) acc[k] = _mm512_setzero_ps();
  for (int s = 0; s < segments; ++s) {
    const uint16_t* ws = static_cast<const uint16_t*>(w[s]) + r * row_stride;
    const uint16_t* vs = v[s];
    for (int64_t i = 0; i < nv; i += kPairLanes) {
      const Pairs x = LoadPairs(vs + i);
      const uint16_t* row = ws + i;  // stepped by row_stride: one register, not R row pointers
      for (int k = 0; k < R; ++k, row += row_stride) acc[k] = _mm512_dpbf16_ps(acc[k], LoadPairs(row), x);
    }
    if (kTail) {
      const Pairs x = LoadPairsTail(vs + nv, len - nv);
      const uint16_t* row = ws + nv;
      for (int k = 0; k < R; ++k, row += row_stride) {
        acc[k] = _mm512_dpbf16_ps(acc[k], LoadPairsTail(row, len - nv), x);
      }
    }
  }
  for (int k = 0; k < R; ++k) y[(r + k) * y_stride] += _mm512_reduce_add_ps(acc[k]);
}

// Each row's sum is independent of how rows are grouped, so the range goes 16 rows at a
// time and the remainder one by one.
template <bool kTail>
void Bf16SegmentedRange(const void* const* w, const uint16_t* const* v, int segments, int64_t len, int64_t row_stride,
                        int64_t r0, int64_t r1, float* y, int64_t y_stride) {
  int64_t r = r0;
  for (; r + 16 <= r1; r += 16) Bf16SegmentedRows<16, kTail>(w, v, segments, len, row_stride, r, y, y_stride);
  for (; r < r1; ++r) Bf16SegmentedRows<1, kTail>(w, v, segments, len, row_stride, r, y, y_stride);
}

void Bf16Segmented(const void* const* w, const uint16_t* const* v, int segments, int64_t len, int64_t row_stride,
                   int64_t r0, int64_t r1, float* y, int64_t y_stride) {
  if (len % kPairLanes != 0) return Bf16SegmentedRange<true>(w, v, segments, len, row_stride, r0, r1, y, y_stride);
  Bf16SegmentedRange<false>(w, v, segments, len, row_stride, r0, r1, y, y_stride);
}

// G rows of one expert, S steps of 32 each, held in registers while every token that chose the
// expert passes over them; each (token, row) lane accumulator lives in `acc` between experts,
// so it meets the steps in Bf16SegmentedRows's order (experts ascending, steps ascending).
// `ahead` (may be null): the same rows of an expert kGroupedAhead places later, prefetched into
// L2 now; without it each row block's first loads waited on memory (perf put most of the
// kernel's samples on them).
template <int S, int G>
inline void GroupedExpertRows(const uint16_t* w, const uint16_t* ahead, int64_t row_stride, const int32_t* tokens,
                              const uint16_t* vecs, int n, float* acc, int64_t acc_token_stride) {
  if (ahead != nullptr) {
    for (int k = 0; k < G; ++k) {
      for (int s = 0; s < S; ++s) __builtin_prefetch(ahead + k * row_stride + s * kPairLanes, 0, 2);
    }
  }
  Pairs wr[G][S];
  for (int k = 0; k < G; ++k) {
    for (int s = 0; s < S; ++s) wr[k][s] = LoadPairs(w + k * row_stride + s * kPairLanes);
  }
  for (int i = 0; i < n; ++i) {
    float* a = acc + tokens[i] * acc_token_stride;
    Pairs x[S];
    for (int s = 0; s < S; ++s) x[s] = LoadPairs(vecs + (i * S + s) * kPairLanes);
    for (int k = 0; k < G; ++k) {
      __m512 v = _mm512_load_ps(a + k * 16);
      for (int s = 0; s < S; ++s) v = _mm512_dpbf16_ps(v, wr[k][s], x[s]);
      _mm512_store_ps(a + k * 16, v);
    }
  }
}

// How many experts ahead GroupedExpertRows prefetches (moe_layer_bench, batch 16: 0 → 2 took
// the expert-major layer from ~333 to ~250 µs; 1 and 4 measured the same as 2).
constexpr int kGroupedAhead = 2;

// Bf16Grouped for len = 32·S: tile by tile, each expert's rows G at a time (G·S = 16 weight
// registers).
template <int S>
void GroupedSteps(const void* const* bases, const int32_t* entry_begin, int num_experts, const int32_t* entry_tokens,
                  const uint16_t* vecs, const int32_t* token_offsets, int num_tokens, int64_t row_stride,
                  int64_t r0, int64_t r1, float* y, int64_t y_token_stride, int64_t tile_rows, float* acc) {
  constexpr int G = 16 / S;
  const int64_t acc_stride = tile_rows * 16;
  for (int64_t tile = r0; tile < r1; tile += tile_rows) {
    const int64_t rows = tile_rows < r1 - tile ? tile_rows : r1 - tile;
    for (int64_t i = 0; i < num_tokens * acc_stride; i += 16) _mm512_store_ps(acc + i, _mm512_setzero_ps());
    for (int a = 0; a < num_experts; ++a) {
      const uint16_t* w = static_cast<const uint16_t*>(bases[a]) + tile * row_stride;
      // The expert kGroupedAhead places on, wrapping into the next tile; none past the range.
      const uint16_t* ahead = nullptr;
      const int wrapped = a + kGroupedAhead - num_experts;
      if (wrapped < 0) {
        ahead = static_cast<const uint16_t*>(bases[a + kGroupedAhead]) + tile * row_stride;
      } else if (tile + tile_rows < r1 && wrapped < num_experts) {
        ahead = static_cast<const uint16_t*>(bases[wrapped]) + (tile + tile_rows) * row_stride;
      }
      const int32_t begin = entry_begin[a], n = entry_begin[a + 1] - begin;
      int64_t k = 0;
      for (; k + G <= rows; k += G) {
        GroupedExpertRows<S, G>(w + k * row_stride, ahead == nullptr ? nullptr : ahead + k * row_stride, row_stride,
                                entry_tokens + begin, vecs + begin * S * kPairLanes, n, acc + k * 16, acc_stride);
      }
      for (; k < rows; ++k) {
        GroupedExpertRows<S, 1>(w + k * row_stride, ahead == nullptr ? nullptr : ahead + k * row_stride, row_stride,
                                entry_tokens + begin, vecs + begin * S * kPairLanes, n, acc + k * 16, acc_stride);
      }
    }
    for (int t = 0; t < num_tokens; ++t) {
      if (token_offsets[t + 1] == token_offsets[t]) continue;  // no entries: y untouched, as segmented
      float* yt = y + t * y_token_stride + tile;
      const float* at = acc + t * acc_stride;
      for (int64_t k = 0; k < rows; ++k) yt[k] += _mm512_reduce_add_ps(_mm512_load_ps(at + k * 16));
    }
  }
}

bool Bf16Grouped(const void* const* bases, const int32_t* entry_begin, int num_experts, const int32_t* entry_tokens,
                 const uint16_t* vecs, const int32_t* token_offsets, int num_tokens, int64_t len,
                 int64_t row_stride, int64_t r0, int64_t r1, float* y, int64_t y_token_stride, int64_t tile_rows,
                 float* acc) {
  switch (len) {
    case 1 * kPairLanes:
      GroupedSteps<1>(bases, entry_begin, num_experts, entry_tokens, vecs, token_offsets, num_tokens, row_stride, r0,
                      r1, y, y_token_stride, tile_rows, acc);
      return true;
    case 2 * kPairLanes:
      GroupedSteps<2>(bases, entry_begin, num_experts, entry_tokens, vecs, token_offsets, num_tokens, row_stride, r0,
                      r1, y, y_token_stride, tile_rows, acc);
      return true;
    case 4 * kPairLanes:
      GroupedSteps<4>(bases, entry_begin, num_experts, entry_tokens, vecs, token_offsets, num_tokens, row_stride, r0,
                      r1, y, y_token_stride, tile_rows, acc);
      return true;
    default:
      return false;
  }
}

void ToBf16(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm256_mask_storeu_epi16(out + i, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

constexpr KernelSet MakeAvx512Bf16() {
  KernelSet set = MakeKernelSet<Avx512, Avx512Rows>("avx512bf16");
  set.bf16x = Bf16ActivationKernels{&Bf16Block, &Bf16Row, &Bf16Segmented, &ToBf16, &Bf16Grouped};
  set.panels = PanelKernels{&Avx512Bf16Panels, &Avx512VnniPanels, &Avx512QuantizeU8};
  return set;
}

// constexpr: a dynamic initializer here would be compiled with this file's instruction set and
// run at startup on every CPU.
constexpr KernelSet kAvx512Bf16 = MakeAvx512Bf16();

// The same set with AMX taking the panel calls (kernels_amx_panels.cc): its bf16 sums round
// unlike vdpbf16ps's, so the two never mix within a set.
constexpr KernelSet MakeAvx512Amx() {
  KernelSet set = MakeAvx512Bf16();
  set.name = "avx512amx";
  set.panels.bf16 = &AmxBf16Panels;
  set.panels.i8 = &AmxI8Panels;
  set.panels.panel_tokens = kMaxAmxPanelTokens;
  set.panels.bf16_expert_down = true;
  return set;
}
constexpr KernelSet kAvx512Amx = MakeAvx512Amx();

}  // namespace

const KernelSet* Avx512Bf16Kernels() { return &kAvx512Bf16; }
const KernelSet* Avx512AmxKernels() { return &kAvx512Amx; }

}  // namespace moeserve::cpu
#else
namespace moeserve::cpu {
const KernelSet* Avx512Bf16Kernels() { return nullptr; }
const KernelSet* Avx512AmxKernels() { return nullptr; }
}  // namespace moeserve::cpu
#endif
