// The kernels of kernels.h written once over an instruction-set policy `Isa`:
//   using V;                      // a vector of Isa::kLanes floats
//   static V Zero();
//   static V LoadX(const float*);               // kLanes activations
//   static V LoadW(const float* / Bf16* / F16* / int8_t*);  // kLanes weights, widened to fp32
//   static void Store(float*, V);               // kLanes floats
//   static V Fma(V a, V b, V acc);              // acc + a·b
//   static V Broadcast(float s);
//   static float Sum(V);                        // horizontal sum
// Included only by the kernels_<isa>.cc files, each compiled for its instruction set. It must
// stay free of standard-library inline functions: an instance compiled with AVX-512 flags
// could otherwise be picked by the linker for code that runs on every CPU.
#ifndef MOESERVE_ENGINE_BACKEND_CPU_KERNEL_IMPL_H_
#define MOESERVE_ENGINE_BACKEND_CPU_KERNEL_IMPL_H_

#include <cstdint>

#include "engine/kernels/cpu/kernels.h"

namespace moeserve::cpu {
namespace {

// Tags for the 16-bit float weight types (both stored as uint16_t).
struct Bf16 { uint16_t bits; };
struct F16 { uint16_t bits; };

inline float ScalarF32(const float* w) { return *w; }
inline float ScalarF32(const int8_t* w) { return static_cast<float>(*w); }
inline float ScalarF32(const Bf16* w) {
  const uint32_t bits = static_cast<uint32_t>(w->bits) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}
inline float ScalarF32(const F16* w) {
  const uint32_t h = w->bits, sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1fu) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else {  // zero or subnormal: mant · 2^-24, exact in fp32
    float f = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -f : f;
  }
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

constexpr int64_t kPrefetchBytes = 1024;

template <class Isa, class W, int NR, int NT>
void DotBlock(const W* w, int64_t ld, int64_t n, const float* const* xs, float* out) {
  using V = typename Isa::V;
  constexpr int L = Isa::kLanes;
  V acc[NR][NT];
  for (int r = 0; r < NR; ++r) {
    for (int t = 0; t < NT; ++t) acc[r][t] = Isa::Zero();
  }
  const int64_t nv = n - n % L;
  for (int64_t i = 0; i < nv; i += L) {
    V x[NT];
    for (int t = 0; t < NT; ++t) {
      x[t] = Isa::LoadX(xs[t] + i);
      Isa::KeepInRegister(x[t]);
    }
    for (int r = 0; r < NR; ++r) {
      // Several rows are read side by side, which the hardware prefetchers follow poorly:
      // fetch each row's stream ahead explicitly.
      __builtin_prefetch(w + r * ld + i + kPrefetchBytes / static_cast<int64_t>(sizeof(W)));
      const V wr = Isa::LoadW(w + r * ld + i);
      for (int t = 0; t < NT; ++t) acc[r][t] = Isa::Fma(wr, x[t], acc[r][t]);
    }
  }
  for (int r = 0; r < NR; ++r) {
    for (int t = 0; t < NT; ++t) {
      float s = Isa::Sum(acc[r][t]);
      for (int64_t j = nv; j < n; ++j) s += ScalarF32(w + r * ld + j) * xs[t][j];
      out[r * NT + t] = s;
    }
  }
}

// Dispatches on the token count; NR<nt> gives the rows per call for nt tokens.
template <class Isa, class W, template <int> class NR>
void DotBlockAny(const void* w, int64_t ld, int64_t n, const float* const* xs, int nt, float* out) {
  const W* wt = static_cast<const W*>(w);
  switch (nt) {
    case 1: return DotBlock<Isa, W, NR<1>::value, 1>(wt, ld, n, xs, out);
    case 2: return DotBlock<Isa, W, NR<2>::value, 2>(wt, ld, n, xs, out);
    case 3: return DotBlock<Isa, W, NR<3>::value, 3>(wt, ld, n, xs, out);
    default: return DotBlock<Isa, W, NR<4>::value, 4>(wt, ld, n, xs, out);
  }
}

template <class Isa, class W>
void DotRowAny(const void* w, int64_t n, const float* const* xs, int nt, float* out) {
  const W* wt = static_cast<const W*>(w);
  switch (nt) {
    case 1: return DotBlock<Isa, W, 1, 1>(wt, 0, n, xs, out);
    case 2: return DotBlock<Isa, W, 1, 2>(wt, 0, n, xs, out);
    case 3: return DotBlock<Isa, W, 1, 3>(wt, 0, n, xs, out);
    default: return DotBlock<Isa, W, 1, 4>(wt, 0, n, xs, out);
  }
}

template <class Isa, class W, int R>
void SegmentedRows(const void* const* w, const float* const* v, const float* const* scales, int segments, int64_t len,
                   int64_t row_stride, float* out) {
  using V = typename Isa::V;
  constexpr int L = Isa::kLanes;
  const int64_t nv = len - len % L;
  V acc[R];
  float tail[R];
  for (int k = 0; k < R; ++k) acc[k] = Isa::Zero(), tail[k] = 0.0f;
  for (int s = 0; s < segments; ++s) {
    const W* ws = static_cast<const W*>(w[s]);
    const float* vs = v[s];
    if (scales == nullptr) {
      for (int64_t i = 0; i < nv; i += L) {
        const V x = Isa::LoadX(vs + i);
        for (int k = 0; k < R; ++k) acc[k] = Isa::Fma(Isa::LoadW(ws + k * row_stride + i), x, acc[k]);
      }
      for (int k = 0; k < R; ++k) {
        for (int64_t j = nv; j < len; ++j) tail[k] += ScalarF32(ws + k * row_stride + j) * vs[j];
      }
    } else {  // per-segment row scales (int8): scale each segment's partial before adding it
      V part[R];
      for (int k = 0; k < R; ++k) part[k] = Isa::Zero();
      for (int64_t i = 0; i < nv; i += L) {
        const V x = Isa::LoadX(vs + i);
        for (int k = 0; k < R; ++k) part[k] = Isa::Fma(Isa::LoadW(ws + k * row_stride + i), x, part[k]);
      }
      for (int k = 0; k < R; ++k) {
        const float scale = scales[s][k];
        acc[k] = Isa::Fma(part[k], Isa::Broadcast(scale), acc[k]);
        float t = 0.0f;
        for (int64_t j = nv; j < len; ++j) t += ScalarF32(ws + k * row_stride + j) * vs[j];
        tail[k] += scale * t;
      }
    }
  }
  for (int k = 0; k < R; ++k) out[k] = Isa::Sum(acc[k]) + tail[k];
}

template <class Isa, class W>
void SegmentedAny(const void* const* w, const float* const* v, const float* const* scales, int segments, int64_t len,
                  int64_t row_stride, int rows, float* out) {
  switch (rows) {
    case 1: return SegmentedRows<Isa, W, 1>(w, v, scales, segments, len, row_stride, out);
    case 2: return SegmentedRows<Isa, W, 2>(w, v, scales, segments, len, row_stride, out);
    case 3: return SegmentedRows<Isa, W, 3>(w, v, scales, segments, len, row_stride, out);
    default: return SegmentedRows<Isa, W, 4>(w, v, scales, segments, len, row_stride, out);
  }
}

// K vectors of out held in registers while every slot adds its weighted row.
template <class Isa, class W, int K>
inline void WeightedRowsChunk(const W* rows, int64_t ld, const float* weights, int slots, float* out) {
  using V = typename Isa::V;
  constexpr int L = Isa::kLanes;
  V acc[K];
  for (int k = 0; k < K; ++k) acc[k] = Isa::LoadX(out + k * L);
  for (int s = 0; s < slots; ++s) {
    const V w = Isa::Broadcast(weights[s]);
    const W* row = rows + s * ld;
    for (int k = 0; k < K; ++k) acc[k] = Isa::Fma(Isa::LoadW(row + k * L), w, acc[k]);
  }
  for (int k = 0; k < K; ++k) Isa::Store(out + k * L, acc[k]);
}

// The columns past the last whole vector, one at a time; shared by both weighted-row kernels
// so that a column's arithmetic is the same whichever one ran.
template <class W>
__attribute__((noinline)) void WeightedRowsTail(const W* rows, int64_t ld, const float* weights, int slots,
                                                int64_t from, int64_t n, float* out) {
  for (int64_t i = from; i < n; ++i) {
    float o = out[i];
    for (int s = 0; s < slots; ++s) o += weights[s] * ScalarF32(rows + s * ld + i);
    out[i] = o;
  }
}

template <class Isa, class W>
void WeightedRows(const void* v, int64_t ld, const float* weights, int slots, int64_t n, float* out) {
  constexpr int L = Isa::kLanes, kChunk = 8;
  const W* rows = static_cast<const W*>(v);
  const int64_t nv = n - n % L;
  int64_t c = 0;
  for (; c + kChunk * L <= nv; c += kChunk * L)
    WeightedRowsChunk<Isa, W, kChunk>(rows + c, ld, weights, slots, out + c);
  for (; c < nv; c += L) WeightedRowsChunk<Isa, W, 1>(rows + c, ld, weights, slots, out + c);
  WeightedRowsTail(rows, ld, weights, slots, nv, n, out);
}

// K vectors of each of Q outputs in registers; every slot's row is loaded (and widened) once
// and added to all Q outputs with their own weights.
template <class Isa, class W, int K, int Q>
inline void WeightedRowsMultiChunk(const W* rows, int64_t ld, const float* const* weights, int slots,
                                   float* const* outs, int64_t c) {
  using V = typename Isa::V;
  constexpr int L = Isa::kLanes;
  V acc[Q][K];
  for (int q = 0; q < Q; ++q) {
    for (int k = 0; k < K; ++k) acc[q][k] = Isa::LoadX(outs[q] + c + k * L);
  }
  for (int s = 0; s < slots; ++s) {
    const W* row = rows + s * ld + c;
    V r[K];
    for (int k = 0; k < K; ++k) r[k] = Isa::LoadW(row + k * L);
    for (int q = 0; q < Q; ++q) {
      const V w = Isa::Broadcast(weights[q][s]);
      for (int k = 0; k < K; ++k) acc[q][k] = Isa::Fma(r[k], w, acc[q][k]);
    }
  }
  for (int q = 0; q < Q; ++q) {
    for (int k = 0; k < K; ++k) Isa::Store(outs[q] + c + k * L, acc[q][k]);
  }
}

template <class Isa, class W, int Q>
void WeightedRowsMultiQ(const W* rows, int64_t ld, const float* const* weights, int slots, int64_t n,
                        float* const* outs) {
  // 4 × 4 accumulators fill half of AVX-512's 32 registers; 4 × 2 keep 16-register sets spill-free.
  constexpr int L = Isa::kLanes, K = L >= 16 ? 4 : 2;
  const int64_t nv = n - n % L;
  int64_t c = 0;
  for (; c + K * L <= nv; c += K * L) WeightedRowsMultiChunk<Isa, W, K, Q>(rows, ld, weights, slots, outs, c);
  for (; c < nv; c += L) WeightedRowsMultiChunk<Isa, W, 1, Q>(rows, ld, weights, slots, outs, c);
  for (int q = 0; q < Q; ++q) WeightedRowsTail(rows, ld, weights[q], slots, nv, n, outs[q]);
}

template <class Isa, class W>
void WeightedRowsMulti(const void* v, int64_t ld, const float* const* weights, int nq, int slots, int64_t n,
                       float* const* outs) {
  const W* rows = static_cast<const W*>(v);
  switch (nq) {
    case 1: return WeightedRowsMultiQ<Isa, W, 1>(rows, ld, weights, slots, n, outs);
    case 2: return WeightedRowsMultiQ<Isa, W, 2>(rows, ld, weights, slots, n, outs);
    case 3: return WeightedRowsMultiQ<Isa, W, 3>(rows, ld, weights, slots, n, outs);
    default: return WeightedRowsMultiQ<Isa, W, kMaxWeightedQueries>(rows, ld, weights, slots, n, outs);
  }
}

// Softmax on GCC vector types of 16 floats: each kernel file compiles them to its own
// instruction set (one zmm, two ymm, four xmm or NEON registers), so one definition serves all.
typedef float F32x16 __attribute__((vector_size(64)));
typedef int32_t I32x16 __attribute__((vector_size(64)));
typedef double F64x8 __attribute__((vector_size(64)));
constexpr int kSoftmaxLanes = 16;

inline F32x16 LoadF32x16(const float* p) {
  F32x16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void StoreF32x16(float* p, F32x16 v) { __builtin_memcpy(p, &v, sizeof(v)); }
// The last `count` (< 16) elements, the rest `fill`.
inline F32x16 LoadF32x16Tail(const float* p, int64_t count, float fill) {
  float tmp[kSoftmaxLanes];
  for (int i = 0; i < kSoftmaxLanes; ++i) tmp[i] = i < count ? p[i] : fill;
  return LoadF32x16(tmp);
}

// e^x for x <= 0 (what softmax gives it), 0 below -87.3 (e^x would be subnormal) and for -inf:
// x = n·ln2 + r with |r| <= ln2/2 (ln2 in two parts, so r is exact), e^r by the degree-6
// Cephes polynomial, 2^n through the exponent bits. Within 2 ulp; exactly 1 at x = 0.
inline F32x16 ExpNonPositive(F32x16 x) {
  const I32x16 underflow = x < -87.3f;  // lanes that give 0
  x = underflow ? F32x16{} - 87.3f : x;
  // Round to nearest by the 1.5·2^23 shift (no library call, exact for |n| < 2^22).
  const F32x16 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const F32x16 r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  F32x16 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const I32x16 bits = (__builtin_convertvector(n, I32x16) + 127) << 23;
  F32x16 pow2;
  __builtin_memcpy(&pow2, &bits, sizeof(pow2));
  return underflow ? F32x16{} : p * pow2;
}

inline void SoftmaxRow(float* s, int64_t n, float scale) {
  constexpr int L = kSoftmaxLanes;
  const int64_t nv = n - n % L;
  // Scale, and the largest scaled score (max is exact, so the lane order does not matter).
  F32x16 top = F32x16{} - __builtin_inff();
  for (int64_t i = 0; i < nv; i += L) {
    const F32x16 v = LoadF32x16(s + i) * scale;
    StoreF32x16(s + i, v);
    top = v > top ? v : top;
  }
  float m = -__builtin_inff();
  for (int64_t i = nv; i < n; ++i) m = (s[i] *= scale) > m ? s[i] : m;
  for (int i = 0; i < L; ++i) m = top[i] > m ? top[i] : m;
  // exp, summed in fp64 lanes; the tail as one vector padded with -inf (whose exp adds 0).
  F64x8 lo{}, hi{};
  const auto add = [&](F32x16 e) {
    lo += __builtin_convertvector(__builtin_shufflevector(e, e, 0, 1, 2, 3, 4, 5, 6, 7), F64x8);
    hi += __builtin_convertvector(__builtin_shufflevector(e, e, 8, 9, 10, 11, 12, 13, 14, 15), F64x8);
  };
  for (int64_t i = 0; i < nv; i += L) {
    const F32x16 e = ExpNonPositive(LoadF32x16(s + i) - m);
    StoreF32x16(s + i, e);
    add(e);
  }
  if (nv < n) {
    const F32x16 e = ExpNonPositive(LoadF32x16Tail(s + nv, n - nv, -__builtin_inff()) - m);
    for (int64_t i = nv; i < n; ++i) s[i] = e[i - nv];
    add(e);
  }
  const F64x8 both = lo + hi;
  double sum = 0;
  for (int i = 0; i < 8; ++i) sum += both[i];
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < nv; i += L) StoreF32x16(s + i, LoadF32x16(s + i) * inv);
  for (int64_t i = nv; i < n; ++i) s[i] *= inv;
}

// op over v[0..n) in place, 16 lanes at a time, the tail as one vector padded with zeros.
template <class Op>
inline void MapRow(float* v, int64_t n, Op op) {
  constexpr int L = kSoftmaxLanes;
  int64_t i = 0;
  for (; i + L <= n; i += L) StoreF32x16(v + i, op(LoadF32x16(v + i)));
  if (i < n) {
    const F32x16 tail = op(LoadF32x16Tail(v + i, n - i, 0.0f));
    for (int64_t j = i; j < n; ++j) v[j] = tail[j - i];
  }
}

// x·σ(x) of 16 lanes from e = e^−|x|, which never overflows: x / (1 + e) for x >= 0 and
// x·e / (1 + e) below (→ x and → −0 far out).
inline F32x16 Silu16(F32x16 x) {
  const I32x16 negative = x < 0.0f;
  const F32x16 e = ExpNonPositive(negative ? x : -x);
  return (negative ? x * e : x) / (1.0f + e);
}

inline void SiluRow(float* v, int64_t n) { MapRow(v, n, Silu16); }

// The exact-erf GELU, x·Φ(x) = x·erfc(−x/√2)/2, of 16 lanes. erfc(z) for z = |x|/√2 comes
// from t·e^(P(t) − z²), t = 1/(1 + z/2), P a fitted degree-9 polynomial whose relative error
// stays below 1.2e-7 for every z (the classic Chebyshev fit for erfc); the exponent is <= 0,
// so ExpNonPositive serves. Then x·erfc/2 below zero and x − x·erfc/2 above, neither of which
// cancels.
inline F32x16 Gelu16(F32x16 x) {
  const I32x16 negative = x < 0.0f;
  const F32x16 z = (negative ? -x : x) * 0.707106781186547524f;
  const F32x16 t = 1.0f / (1.0f + 0.5f * z);
  F32x16 p = t * 0.17087277f - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const F32x16 half_erfc = 0.5f * t * ExpNonPositive(p - z * z);
  return negative ? x * half_erfc : x - x * half_erfc;
}

inline void GeluRow(float* v, int64_t n) { MapRow(v, n, Gelu16); }

template <class Isa, template <int> class NR>
constexpr KernelSet MakeKernelSet(const char* name) {
  return KernelSet{
      name,
      {0, NR<1>::value, NR<2>::value, NR<3>::value, NR<4>::value},
      {&DotBlockAny<Isa, float, NR>, &DotBlockAny<Isa, Bf16, NR>, &DotBlockAny<Isa, F16, NR>,
       &DotBlockAny<Isa, int8_t, NR>},
      {&DotRowAny<Isa, float>, &DotRowAny<Isa, Bf16>, &DotRowAny<Isa, F16>, &DotRowAny<Isa, int8_t>},
      {&SegmentedAny<Isa, float>, &SegmentedAny<Isa, Bf16>, &SegmentedAny<Isa, F16>, &SegmentedAny<Isa, int8_t>},
      {&WeightedRows<Isa, float>, &WeightedRows<Isa, Bf16>, &WeightedRows<Isa, F16>, &WeightedRows<Isa, int8_t>},
      {&WeightedRowsMulti<Isa, float>, &WeightedRowsMulti<Isa, Bf16>, &WeightedRowsMulti<Isa, F16>,
       &WeightedRowsMulti<Isa, int8_t>},
      &SoftmaxRow,
      &SiluRow,
      &GeluRow,
      {},
      {},
  };
}

}  // namespace
}  // namespace moeserve::cpu

#endif  // MOESERVE_ENGINE_BACKEND_CPU_KERNEL_IMPL_H_
