// AVX2 + FMA + F16C kernels (8 lanes). This file is compiled with -mavx2 -mfma -mf16c and
// runs only after the CPU check in matmul.cc.
#include "engine/kernels/cpu/kernels.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include "engine/kernels/cpu/kernel_impl.h"

namespace moeserve::cpu {
namespace {

struct Avx2 {
  static constexpr int kLanes = 8;
  using V = __m256;
  static V Zero() { return _mm256_setzero_ps(); }
  static V Broadcast(float s) { return _mm256_set1_ps(s); }
  static V LoadX(const float* x) { return _mm256_loadu_ps(x); }
  static V LoadW(const float* w) { return _mm256_loadu_ps(w); }
  static V LoadW(const Bf16* w) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
  }
  static V LoadW(const F16* w) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))); }
  static V LoadW(const int8_t* w) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w))));
  }
  static void KeepInRegister(V& v) { asm("" : "+x"(v)); }
  static void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V Fma(V a, V b, V acc) { return _mm256_fmadd_ps(a, b, acc); }
  static float Sum(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

// 16 ymm registers: rows × tokens accumulators plus the tokens' activations must fit.
template <int NT> struct Avx2Rows { static constexpr int value = NT <= 2 ? 4 : 2; };

// constexpr: a dynamic initializer here would be compiled with this file's instruction set and
// run at startup on every CPU.
constexpr KernelSet kAvx2 = MakeKernelSet<Avx2, Avx2Rows>("avx2");

}  // namespace

const KernelSet* Avx2Kernels() { return &kAvx2; }

}  // namespace moeserve::cpu
#else
namespace moeserve::cpu {
const KernelSet* Avx2Kernels() { return nullptr; }
}  // namespace moeserve::cpu
#endif
