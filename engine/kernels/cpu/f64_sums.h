// Sums of float rows in double precision for the per-token statistics (norms, the DECO token
// mean): eight partial sums, element i going to partial i mod 8, added in one fixed order at
// the end. One running sum made each statistic a chain of n dependent additions (a 768-wide
// RMSNorm took ~0.9 µs, as long as the rest of the norm several times over); a token's result
// still depends only on its own values, whatever the batch or thread.
#ifndef MOESERVE_ENGINE_KERNELS_CPU_F64_SUMS_H_
#define MOESERVE_ENGINE_KERNELS_CPU_F64_SUMS_H_

#include <cstdint>
#include <cstring>

namespace moeserve {
namespace f64_sums_internal {

typedef float F32x8 __attribute__((vector_size(32)));
typedef double F64x8 __attribute__((vector_size(64)));

// out = x[0..count) in double (count <= 8), zeros after. (Vectors go by reference: passed or
// returned by value, 64-byte vectors change the ABI between builds with and without AVX-512.)
inline void Load(const float* x, int64_t count, F64x8& out) {
  F32x8 v = {};
  if (count == 8) {
    std::memcpy(&v, x, sizeof(v));
  } else {
    for (int64_t j = 0; j < count; ++j) v[j] = x[j];
  }
  out = __builtin_convertvector(v, F64x8);
}

// Σ over the 8-element blocks of [0, n): add(i, count, s) adds block i's terms to the lanes
// of s (count < 8 only in the last block, whose lanes past count must get nothing); the
// lanes are then added in one fixed order.
template <class AddBlock>
inline double SumBlocks(int64_t n, AddBlock add) {
  F64x8 s = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) add(i, int64_t{8}, s);
  if (i < n) add(i, n - i, s);
  return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

}  // namespace f64_sums_internal

// Σ a[i]·b[i].
inline double DotF64(const float* a, const float* b, int64_t n) {
  using namespace f64_sums_internal;
  return SumBlocks(n, [&](int64_t i, int64_t count, F64x8& s) {
    F64x8 x, y;
    Load(a + i, count, x);
    Load(b + i, count, y);
    s += x * y;
  });
}

// Σ x[i]².
inline double SumSquaresF64(const float* x, int64_t n) { return DotF64(x, x, n); }

// Σ x[i].
inline double SumF64(const float* x, int64_t n) {
  using namespace f64_sums_internal;
  return SumBlocks(n, [&](int64_t i, int64_t count, F64x8& s) {
    F64x8 v;
    Load(x + i, count, v);
    s += v;
  });
}

// Σ (x[i] − mean)².
inline double SumSquaredDeviationsF64(const float* x, int64_t n, double mean) {
  using namespace f64_sums_internal;
  return SumBlocks(n, [&](int64_t i, int64_t count, F64x8& s) {
    F64x8 d;
    Load(x + i, count, d);
    d -= mean;
    for (int64_t j = count; j < 8; ++j) d[j] = 0.0;
    s += d * d;
  });
}

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_KERNELS_CPU_F64_SUMS_H_
