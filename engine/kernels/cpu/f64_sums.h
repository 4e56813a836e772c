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

// (Vectors go by reference: passed or returned by value, 64-byte vectors change the ABI
// between builds with and without AVX-512.)
// out = x[0..8) in double.
inline void Load8(const float* x, F64x8& out) {
  F32x8 v;
  std::memcpy(&v, x, sizeof(v));
  out = __builtin_convertvector(v, F64x8);
}

// out = x[0..n) for n < 8, zeros after.
inline void LoadTail(const float* x, int64_t n, F64x8& out) {
  F32x8 v = {};
  for (int64_t j = 0; j < n; ++j) v[j] = x[j];
  out = __builtin_convertvector(v, F64x8);
}

inline double Total(const F64x8& s) { return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7])); }

}  // namespace f64_sums_internal

// Σ a[i]·b[i].
inline double DotF64(const float* a, const float* b, int64_t n) {
  using namespace f64_sums_internal;
  F64x8 s = {};
  int64_t i = 0;
  F64x8 x, y;
  for (; i + 8 <= n; i += 8) {
    Load8(a + i, x);
    Load8(b + i, y);
    s += x * y;
  }
  if (i < n) {
    LoadTail(a + i, n - i, x);
    LoadTail(b + i, n - i, y);
    s += x * y;
  }
  return Total(s);
}

// Σ x[i]².
inline double SumSquaresF64(const float* x, int64_t n) { return DotF64(x, x, n); }

// Σ x[i].
inline double SumF64(const float* x, int64_t n) {
  using namespace f64_sums_internal;
  F64x8 s = {};
  int64_t i = 0;
  F64x8 v;
  for (; i + 8 <= n; i += 8) {
    Load8(x + i, v);
    s += v;
  }
  if (i < n) {
    LoadTail(x + i, n - i, v);
    s += v;
  }
  return Total(s);
}

// Σ (x[i] − mean)².
inline double SumSquaredDeviationsF64(const float* x, int64_t n, double mean) {
  using namespace f64_sums_internal;
  F64x8 s = {};
  int64_t i = 0;
  F64x8 d;
  for (; i + 8 <= n; i += 8) {
    Load8(x + i, d);
    d -= mean;
    s += d * d;
  }
  if (i < n) {
    LoadTail(x + i, n - i, d);
    d -= mean;
    for (int64_t j = n - i; j < 8; ++j) d[j] = 0.0;
    s += d * d;
  }
  return Total(s);
}

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_KERNELS_CPU_F64_SUMS_H_
