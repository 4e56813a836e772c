// The AVX-512F instruction-set policy of kernel_impl.h (16 lanes), shared by the AVX-512
// kernel files. Include only from files compiled with AVX-512 flags.
#ifndef MOESERVE_ENGINE_BACKEND_CPU_ISA_AVX512_H_
#define MOESERVE_ENGINE_BACKEND_CPU_ISA_AVX512_H_

#include <immintrin.h>

#include "engine/kernels/cpu/kernel_impl.h"

namespace moeserve::cpu {
namespace {

struct Avx512 {
  static constexpr int kLanes = 16;
  using V = __m512;
  static V Zero() { return _mm512_setzero_ps(); }
  static V Broadcast(float s) { return _mm512_set1_ps(s); }
  static V LoadX(const float* x) { return _mm512_loadu_ps(x); }
  static V LoadW(const float* w) { return _mm512_loadu_ps(w); }
  static V LoadW(const Bf16* w) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  }
  static V LoadW(const F16* w) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w))); }
  static V LoadW(const int8_t* w) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))));
  }
  static void KeepInRegister(V&) {}
  static void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V Fma(V a, V b, V acc) { return _mm512_fmadd_ps(a, b, acc); }
  static float Sum(V v) { return _mm512_reduce_add_ps(v); }
};

// 32 zmm registers: 4 rows × 4 tokens of accumulators fit with the activations.
template <int NT> struct Avx512Rows { static constexpr int value = 4; };

}  // namespace
}  // namespace moeserve::cpu

#endif  // MOESERVE_ENGINE_BACKEND_CPU_ISA_AVX512_H_
