// Panel kernels (kernels.h, PanelKernels) on AVX-512: bf16 weights × bf16 activations with
// vdpbf16ps, int8 weights × unsigned int8 activations with vpdpbusd. One 64-byte load holds a
// group of every row of a panel (panel_layout.h); the token's group is broadcast to all lanes,
// so lane i accumulates row i and no sum crosses lanes. A tile of np panels × nt tokens keeps
// np·nt accumulators in registers: every weight load feeds nt multiplies, every broadcast np.
// Each (row, token) pair is one accumulator over the groups in ascending order, whatever the
// tile, so a token's result does not depend on the batch. Compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx512bf16 -mavx512vnni; entered only after the CPU check in matmul.cc.
#include "engine/kernels/cpu/panel_kernels.h"

#if defined(__x86_64__) && defined(__AVX512BF16__) && defined(__AVX512VNNI__)
#include <immintrin.h>

#include "engine/kernels/cpu/i8_panel_epilogue.h"
#include "engine/kernels/cpu/kernels.h"

namespace moeserve::cpu {
namespace {

// How far ahead of its read position each panel stream is prefetched.
constexpr int64_t kPrefetchBytes = 2048;
constexpr bool kPrefetch = true;  // matmul_bench, 16 tokens: 114 -> 129 GMAC/s

inline int32_t LoadGroup(const void* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

// Bf16: acc[p][t] += panel p's group k (16 rows × 2) · token t's pair k.
template <int NP, int NT>
void Bf16Tile(const unsigned char* w, int64_t panel_bytes, int64_t groups, const uint16_t* x, int64_t x_stride,
              float* out) {
  __m512 acc[NP][NT];
  #pragma GCC unroll 8
  for (int p = 0; p < NP; ++p) {
    #pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) acc[p][t] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < groups; ++k) {
    __m512bh wv[NP];
    #pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
      const unsigned char* at = w + p * panel_bytes + k * kPanelGroupBytes;
      if (kPrefetch) __builtin_prefetch(at + kPrefetchBytes);
      wv[p] = (__m512bh)_mm512_load_si512(at);
    }
    #pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const __m512bh xb = (__m512bh)_mm512_set1_epi32(LoadGroup(x + t * x_stride + 2 * k));
      #pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) acc[p][t] = _mm512_dpbf16_ps(acc[p][t], wv[p], xb);
    }
  }
  #pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) {
    #pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) _mm512_storeu_ps(out + t * kMaxPanelRows + p * kPanelRows, acc[p][t]);
  }
}

// acc += the 4-byte dot products of u (unsigned) and s (signed) per lane. In inline assembly:
// with the intrinsic, GCC 12 kept a second copy of a 4 × 6 tile's accumulators in memory and
// stored all 24 every step (matmul_bench, int8, 64 tokens: 146 GMAC/s).
inline void DotBytes(__m512i& acc, __m512i u, __m512i s) { asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s)); }

// Int8: acc[p][t] += Σ of 4 products u8(token t's quad k) · s8(panel p's group k), exact.
template <int NP, int NT>
void VnniTile(const unsigned char* w, int64_t panel_bytes, int64_t groups, const uint8_t* x, int64_t x_stride,
              const I8PanelScales& sc, float* out) {
  __m512i acc[NP][NT];
  #pragma GCC unroll 8
  for (int p = 0; p < NP; ++p) {
    #pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) acc[p][t] = _mm512_setzero_si512();
  }
  for (int64_t k = 0; k < groups; ++k) {
    __m512i wv[NP];
    #pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
      const unsigned char* at = w + p * panel_bytes + k * kPanelGroupBytes;
      __builtin_prefetch(at + kPrefetchBytes);
      wv[p] = _mm512_load_si512(at);
    }
    #pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const __m512i xb = _mm512_set1_epi32(LoadGroup(x + t * x_stride + 4 * k));
      #pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) DotBytes(acc[p][t], xb, wv[p]);
    }
  }
  #pragma GCC unroll 8
  for (int p = 0; p < NP; ++p) {
    const I8PanelRows rows = LoadI8PanelRows(sc, p);
    #pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      StoreI8PanelSums(acc[p][t], rows, sc.x_scales[t], out + t * kMaxPanelRows + p * kPanelRows);
    }
  }
}

// Calls Tile<np, nt> for np in 1..kMaxPanels and nt in 1..kMaxPanelTokens (4 and 6).
// Calls Tile<np, nt>::Run(args...) for np in 1..kMaxPanels and nt in 1..kMaxPanelTokens.
template <template <int, int> class Tile, int NP, class... Args>
void ForTokens(int nt, Args&&... args) {
  switch (nt) {
    case 1: return Tile<NP, 1>::Run(args...);
    case 2: return Tile<NP, 2>::Run(args...);
    case 3: return Tile<NP, 3>::Run(args...);
    case 4: return Tile<NP, 4>::Run(args...);
    case 5: return Tile<NP, 5>::Run(args...);
    default: return Tile<NP, 6>::Run(args...);
  }
}

template <template <int, int> class Tile, class... Args>
void ForTile(int np, int nt, Args&&... args) {
  switch (np) {
    case 1: return ForTokens<Tile, 1>(nt, args...);
    case 2: return ForTokens<Tile, 2>(nt, args...);
    case 3: return ForTokens<Tile, 3>(nt, args...);
    default: return ForTokens<Tile, 4>(nt, args...);
  }
}

template <int NP, int NT>
struct Bf16 {
  static void Run(const unsigned char* w, int64_t pb, int64_t g, const uint16_t* x, int64_t xs, float* out) {
    Bf16Tile<NP, NT>(w, pb, g, x, xs, out);
  }
};
template <int NP, int NT>
struct Vnni {
  static void Run(const unsigned char* w, int64_t pb, int64_t g, const uint8_t* x, int64_t xs,
                  const I8PanelScales& sc, float* out) {
    VnniTile<NP, NT>(w, pb, g, x, xs, sc, out);
  }
};

}  // namespace

void Avx512Bf16Panels(const void* panels, int64_t panel_bytes, int np, int64_t groups, const uint16_t* x,
                      int64_t x_stride, int nt, float* out) {
  ForTile<Bf16>(np, nt, static_cast<const unsigned char*>(panels), panel_bytes, groups, x, x_stride, out);
}

void Avx512VnniPanels(const void* panels, int64_t panel_bytes, int np, int64_t groups, const uint8_t* x,
                      int64_t x_stride, int nt, const I8PanelScales& scales, float* out) {
  ForTile<Vnni>(np, nt, static_cast<const unsigned char*>(panels), panel_bytes, groups, x, x_stride, scales, out);
}

float Avx512QuantizeU8(const float* x, int64_t n, uint8_t* out) {
  __m512 max_abs = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) max_abs = _mm512_max_ps(max_abs, _mm512_abs_ps(_mm512_loadu_ps(x + c)));
  const __mmask16 tail = static_cast<__mmask16>((1u << (n - c)) - 1u);
  max_abs = _mm512_max_ps(max_abs, _mm512_abs_ps(_mm512_maskz_loadu_ps(tail, x + c)));
  const float m = _mm512_reduce_max_ps(max_abs);
  if (m == 0.0f) {
    for (int64_t i = 0; i < n; ++i) out[i] = 128;
    return 0.0f;
  }
  const __m512 inv = _mm512_set1_ps(127.0f / m);
  const __m512i offset = _mm512_set1_epi32(128);
  for (c = 0; c < n; c += 16) {
    const __mmask16 k = n - c >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - c)) - 1u);
    // Nearest even (the default rounding mode), then + 128: 1..255.
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + c), inv)),
                                       offset);
    _mm_mask_storeu_epi8(out + c, k, _mm512_cvtepi32_epi8(q));
  }
  return m / 127.0f;
}

}  // namespace moeserve::cpu
#endif
