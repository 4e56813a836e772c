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
  for (int p = 0; p < NP; ++p) {
    for (int t = 0; t < NT; ++t) acc[p][t] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < groups; ++k) {
    __m512bh wv[NP];
    for (int p = 0; p < NP; ++p) {
      const unsigned char* at = w + p * panel_bytes + k * kPanelGroupBytes;
      if (kPrefetch) __builtin_prefetch(at + kPrefetchBytes);
      wv[p] = (__m512bh)_mm512_load_si512(at);
    }
    for (int t = 0; t < NT; ++t) {
      const __m512bh xb = (__m512bh)_mm512_set1_epi32(LoadGroup(x + t * x_stride + 2 * k));
      for (int p = 0; p < NP; ++p) acc[p][t] = _mm512_dpbf16_ps(acc[p][t], wv[p], xb);
    }
  }
  for (int t = 0; t < NT; ++t) {
    for (int p = 0; p < NP; ++p) _mm512_storeu_ps(out + t * kMaxPanelRows + p * kPanelRows, acc[p][t]);
  }
}

// Int8: acc[p][t] += Σ of 4 products u8(token t's quad k) · s8(panel p's group k), exact.
template <int NP, int NT>
void VnniTile(const unsigned char* w, int64_t panel_bytes, int64_t groups, const uint8_t* x, int64_t x_stride,
              int32_t* out) {
  __m512i acc[NP][NT];
  for (int p = 0; p < NP; ++p) {
    for (int t = 0; t < NT; ++t) acc[p][t] = _mm512_setzero_si512();
  }
  for (int64_t k = 0; k < groups; ++k) {
    __m512i wv[NP];
    for (int p = 0; p < NP; ++p) {
      const unsigned char* at = w + p * panel_bytes + k * kPanelGroupBytes;
      __builtin_prefetch(at + kPrefetchBytes);
      wv[p] = _mm512_load_si512(at);
    }
    for (int t = 0; t < NT; ++t) {
      const __m512i xb = _mm512_set1_epi32(LoadGroup(x + t * x_stride + 4 * k));
      for (int p = 0; p < NP; ++p) acc[p][t] = _mm512_dpbusd_epi32(acc[p][t], xb, wv[p]);
    }
  }
  for (int t = 0; t < NT; ++t) {
    for (int p = 0; p < NP; ++p) {
      _mm512_storeu_si512(reinterpret_cast<void*>(out + t * kMaxPanelRows + p * kPanelRows), acc[p][t]);
    }
  }
}

// Calls Tile<np, nt> for np in 1..kMaxPanels and nt in 1..kMaxPanelTokens (4 and 6).
template <template <int, int> class Tile, int NP, class X, class Out>
void ForTokens(const unsigned char* w, int64_t panel_bytes, int64_t groups, const X* x, int64_t x_stride, int nt,
               Out* out) {
  switch (nt) {
    case 1: return Tile<NP, 1>::Run(w, panel_bytes, groups, x, x_stride, out);
    case 2: return Tile<NP, 2>::Run(w, panel_bytes, groups, x, x_stride, out);
    case 3: return Tile<NP, 3>::Run(w, panel_bytes, groups, x, x_stride, out);
    case 4: return Tile<NP, 4>::Run(w, panel_bytes, groups, x, x_stride, out);
    case 5: return Tile<NP, 5>::Run(w, panel_bytes, groups, x, x_stride, out);
    default: return Tile<NP, 6>::Run(w, panel_bytes, groups, x, x_stride, out);
  }
}

template <template <int, int> class Tile, class X, class Out>
void ForPanels(const void* panels, int64_t panel_bytes, int np, int64_t groups, const X* x, int64_t x_stride, int nt,
               Out* out) {
  const unsigned char* w = static_cast<const unsigned char*>(panels);
  switch (np) {
    case 1: return ForTokens<Tile, 1>(w, panel_bytes, groups, x, x_stride, nt, out);
    case 2: return ForTokens<Tile, 2>(w, panel_bytes, groups, x, x_stride, nt, out);
    case 3: return ForTokens<Tile, 3>(w, panel_bytes, groups, x, x_stride, nt, out);
    default: return ForTokens<Tile, 4>(w, panel_bytes, groups, x, x_stride, nt, out);
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
  static void Run(const unsigned char* w, int64_t pb, int64_t g, const uint8_t* x, int64_t xs, int32_t* out) {
    VnniTile<NP, NT>(w, pb, g, x, xs, out);
  }
};

}  // namespace

void Avx512Bf16Panels(const void* panels, int64_t panel_bytes, int np, int64_t groups, const uint16_t* x,
                      int64_t x_stride, int nt, float* out) {
  ForPanels<Bf16>(panels, panel_bytes, np, groups, x, x_stride, nt, out);
}

void Avx512VnniPanels(const void* panels, int64_t panel_bytes, int np, int64_t groups, const uint8_t* x,
                      int64_t x_stride, int nt, int32_t* out) {
  ForPanels<Vnni>(panels, panel_bytes, np, groups, x, x_stride, nt, out);
}

}  // namespace moeserve::cpu
#endif
