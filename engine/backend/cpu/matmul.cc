#include "engine/backend/cpu/matmul.h"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace moeserve {
namespace {

// Tokens sharing one pass over a weight row: each row is loaded once for up to
// this many.
constexpr int kTokenBlock = 4;
// Weight rows per tile (16 rows of a 4096-wide bf16 matrix = 128 KiB, within
// L2).
constexpr int64_t kRowBlock = 16;

// ---- portable kernels
// ------------------------------------------------------------------

inline float LoadWeight(const float* w, int64_t i) { return w[i]; }
inline float LoadWeight(const uint16_t* w, int64_t i) { return Bf16ToF32(w[i]); }

template <typename W>
void RowPortable(const W* w, int64_t n, const float* const* xs, int nt, float* out) {
  for (int t = 0; t < nt; ++t) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      for (int j = 0; j < 8; ++j) acc[j] += LoadWeight(w, i + j) * xs[t][i + j];
    }
    float s = 0;
    for (; i < n; ++i) s += LoadWeight(w, i) * xs[t][i];
    for (int j = 0; j < 8; ++j) s += acc[j];
    out[t] = s;
  }
}

// ---- AVX2 + FMA kernels
// ----------------------------------------------------------------
#if defined(__x86_64__)

__attribute__((target("avx2,fma"))) inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 shuf = _mm_movehdup_ps(lo);
  __m128 sums = _mm_add_ps(lo, shuf);
  shuf = _mm_movehl_ps(shuf, sums);
  return _mm_cvtss_f32(_mm_add_ss(sums, shuf));
}

__attribute__((target("avx2,fma"))) inline __m256 Load8(const float* w) { return _mm256_loadu_ps(w); }
__attribute__((target("avx2,fma"))) inline __m256 Load8(const uint16_t* w) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

// Every token is accumulated in exactly the same order whatever `nt` is (two
// accumulators over alternating 8-wide blocks, then the scalar tail), so a
// token's result does not depend on which other tokens share the step: batched,
// chunked and single-token runs agree bit for bit, which keeps greedy decoding
// identical under continuous batching and recompute.
template <typename W, int nt>
__attribute__((target("avx2,fma"))) void RowAvx2Fixed(const W* w, int64_t n, const float* const* xs, float* out) {
  const int64_t n8 = n & ~int64_t{7};
  __m256 acc0[kTokenBlock], acc1[kTokenBlock];
  for (int t = 0; t < nt; ++t) acc0[t] = acc1[t] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n8; i += 16) {
    const __m256 w0 = Load8(w + i), w1 = Load8(w + i + 8);
    for (int t = 0; t < nt; ++t) {
      acc0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs[t] + i), acc0[t]);
      acc1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xs[t] + i + 8), acc1[t]);
    }
  }
  if (i < n8) {
    const __m256 w0 = Load8(w + i);
    for (int t = 0; t < nt; ++t) acc0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs[t] + i), acc0[t]);
  }
  for (int t = 0; t < nt; ++t) {
    float s = HorizontalSum(_mm256_add_ps(acc0[t], acc1[t]));
    for (int64_t j = n8; j < n; ++j) s += LoadWeight(w, j) * xs[t][j];
    out[t] = s;
  }
}

// Token count as a template argument keeps the accumulators in registers.
template <typename W>
void RowAvx2(const W* w, int64_t n, const float* const* xs, int nt, float* out) {
  switch (nt) {
    case 1:
      return RowAvx2Fixed<W, 1>(w, n, xs, out);
    case 2:
      return RowAvx2Fixed<W, 2>(w, n, xs, out);
    case 3:
      return RowAvx2Fixed<W, 3>(w, n, xs, out);
    default:
      return RowAvx2Fixed<W, 4>(w, n, xs, out);
  }
}

// Σ over segments of dot(w_s[0..len), v_s[0..len)), accumulated in one pair of registers and
// reduced once: cheap for many short segments (the d-wide expert slices of a down projection).
template <typename W>
__attribute__((target("avx2,fma"))) float SegmentedDotAvx2(const W* const* w, const float* const* v, int segments,
                                                           int64_t len) {
  const int64_t len8 = len & ~int64_t{7};
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float tail = 0;
  for (int s = 0; s < segments; ++s) {
    const W* ws = w[s];
    const float* vs = v[s];
    int64_t i = 0;
    for (; i + 16 <= len8; i += 16) {
      acc0 = _mm256_fmadd_ps(Load8(ws + i), _mm256_loadu_ps(vs + i), acc0);
      acc1 = _mm256_fmadd_ps(Load8(ws + i + 8), _mm256_loadu_ps(vs + i + 8), acc1);
    }
    if (i < len8) acc0 = _mm256_fmadd_ps(Load8(ws + i), _mm256_loadu_ps(vs + i), acc0);
    for (int64_t j = len8; j < len; ++j) tail += LoadWeight(ws, j) * vs[j];
  }
  return HorizontalSum(_mm256_add_ps(acc0, acc1)) + tail;
}

bool HasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#else
bool HasAvx2Fma() { return false; }
#endif

template <typename W>
void MatMulRowsTyped(const WeightMatrix& m, const float* x, int64_t x_stride, int64_t num_tokens, float* y,
                     int64_t y_stride, int64_t r0, int64_t r1, bool accumulate) {
  const bool avx2 = HasAvx2Fma();
  const float* xs[kTokenBlock];
  float out[kTokenBlock];
  // Tiles of kRowBlock weight rows × kTokenBlock tokens: a row block is read
  // from memory once and reused from cache for every token block, a token block
  // stays in L1 across the rows.
  for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
    const int64_t rb_end = std::min(r1, rb + kRowBlock);
    for (int64_t t0 = 0; t0 < num_tokens; t0 += kTokenBlock) {
      const int nt = static_cast<int>(std::min<int64_t>(kTokenBlock, num_tokens - t0));
      for (int t = 0; t < nt; ++t) xs[t] = x + (t0 + t) * x_stride;
      for (int64_t r = rb; r < rb_end; ++r) {
        const W* w = reinterpret_cast<const W*>(m.RowPtr(r));
#if defined(__x86_64__)
        if (avx2) {
          RowAvx2(w, m.cols, xs, nt, out);
        } else {
          RowPortable(w, m.cols, xs, nt, out);
        }
#else
        (void)avx2;
        RowPortable(w, m.cols, xs, nt, out);
#endif
        for (int t = 0; t < nt; ++t) {
          const int64_t row = t0 + t;
          float& dst = y[row * y_stride + r];
          dst = accumulate ? dst + out[t] : out[t];
        }
      }
    }
  }
}

template <typename W>
float SegmentedDotPortable(const W* const* w, const float* const* v, int segments, int64_t len) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float tail = 0;
  const int64_t len8 = len & ~int64_t{7};
  for (int s = 0; s < segments; ++s) {
    for (int64_t i = 0; i < len8; i += 8) {
      for (int j = 0; j < 8; ++j) acc[j] += LoadWeight(w[s], i + j) * v[s][i + j];
    }
    for (int64_t j = len8; j < len; ++j) tail += LoadWeight(w[s], j) * v[s][j];
  }
  float sum = 0;
  for (int j = 0; j < 8; ++j) sum += acc[j];
  return sum + tail;
}

template <typename W>
void SegmentedRowDotsTyped(const void* const* bases, const float* const* vecs, int segments, int64_t len,
                           int64_t row_stride, float* y, int64_t y_stride, int64_t r0, int64_t r1) {
  constexpr int kMaxStackSegments = 256;
  const W* stack_rows[kMaxStackSegments];
  std::vector<const W*> heap_rows;
  const W** rows = stack_rows;
  if (segments > kMaxStackSegments) {
    heap_rows.resize(segments);
    rows = heap_rows.data();
  }
  const bool avx2 = HasAvx2Fma();
  for (int64_t r = r0; r < r1; ++r) {
    for (int s = 0; s < segments; ++s) rows[s] = static_cast<const W*>(bases[s]) + r * row_stride;
#if defined(__x86_64__)
    y[r * y_stride] +=
        avx2 ? SegmentedDotAvx2(rows, vecs, segments, len) : SegmentedDotPortable(rows, vecs, segments, len);
#else
    (void)avx2;
    y[r * y_stride] += SegmentedDotPortable(rows, vecs, segments, len);
#endif
  }
}

}  // namespace

void SegmentedRowDots(DType dtype, const void* const* bases, const float* const* vecs, int segments, int64_t len,
                      int64_t row_stride, float* y, int64_t y_stride, int64_t r0, int64_t r1) {
  if (segments == 0) return;
  if (dtype == DType::kF32) {
    SegmentedRowDotsTyped<float>(bases, vecs, segments, len, row_stride, y, y_stride, r0, r1);
  } else {
    SegmentedRowDotsTyped<uint16_t>(bases, vecs, segments, len, row_stride, y, y_stride, r0, r1);
  }
}

void MatMulRows(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t num_tokens, float* y, int64_t y_stride,
                int64_t r0, int64_t r1, bool accumulate) {
  if (w.dtype == DType::kF32) {
    MatMulRowsTyped<float>(w, x, x_stride, num_tokens, y, y_stride, r0, r1, accumulate);
  } else {
    MatMulRowsTyped<uint16_t>(w, x, x_stride, num_tokens, y, y_stride, r0, r1, accumulate);
  }
}

void ParallelMatMul(ThreadPool& pool, std::span<const MatMulJob> jobs, int64_t num_tokens) {
  int64_t total_rows = 0;
  for (const MatMulJob& j : jobs) total_rows += j.w->rows;
  pool.ParallelFor(total_rows, [&](int64_t begin, int64_t end) {
    int64_t base = 0;
    for (const MatMulJob& j : jobs) {
      const int64_t lo = std::max(begin, base), hi = std::min(end, base + j.w->rows);
      if (lo < hi) {
        MatMulRows(*j.w, j.x, j.x_stride, num_tokens, j.y, j.y_stride, lo - base, hi - base, j.accumulate);
      }
      base += j.w->rows;
    }
  });
}

const char* MatMulKernelName() { return HasAvx2Fma() ? "avx2-fma" : "portable"; }

}  // namespace moeserve
