// AVX-512F kernels (16 lanes). This file is compiled with -mavx512f -mfma -mf16c and runs only
// after the CPU check in matmul.cc.
#include "engine/backend/cpu/kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__)
#include <immintrin.h>

#include "engine/backend/cpu/kernel_impl.h"

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
  static V Fma(V a, V b, V acc) { return _mm512_fmadd_ps(a, b, acc); }
  static float Sum(V v) { return _mm512_reduce_add_ps(v); }
};

// 32 zmm registers: 4 rows × 4 tokens of accumulators fit with the activations.
template <int NT> struct Avx512Rows { static constexpr int value = 4; };

// constexpr: a dynamic initializer here would be compiled with this file's instruction set and
// run at startup on every CPU.
constexpr KernelSet kAvx512 = MakeKernelSet<Avx512, Avx512Rows>("avx512");

}  // namespace

const KernelSet* Avx512Kernels() { return &kAvx512; }

}  // namespace moeserve::cpu
#else
namespace moeserve::cpu {
const KernelSet* Avx512Kernels() { return nullptr; }
}  // namespace moeserve::cpu
#endif
