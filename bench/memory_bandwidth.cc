#include "bench/memory_bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace moeserve {
namespace {

#if defined(__x86_64__)
__attribute__((target("avx2"))) float SumAvx2(const float* p, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (int64_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  float out[8];
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}
#endif

float Sum(const float* p, int64_t n) {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2")) return SumAvx2(p, n);
#endif
  float acc[8] = {};
  for (int64_t i = 0; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += p[i + j];
  }
  return acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] + acc[6] + acc[7];
}

}  // namespace

ReadBandwidthProbe::ReadBandwidthProbe(ThreadPool& pool, int64_t bytes)
    : pool_(pool), n_(bytes / static_cast<int64_t>(sizeof(float)) / 1024 * 1024) {
  buffer_ = static_cast<float*>(std::aligned_alloc(64, n_ * sizeof(float)));
  pool_.ParallelFor(n_, [&](int64_t b, int64_t e) { std::fill(buffer_ + b, buffer_ + e, 1.0f); });
}

ReadBandwidthProbe::~ReadBandwidthProbe() { std::free(buffer_); }

double ReadBandwidthProbe::Measure(int passes) {
  std::vector<double> rates;
  volatile float sink = 0;
  const int64_t chunks = pool_.num_threads() * 64;  // aligned 32-float chunks per thread range
  for (int p = 0; p < passes + 1; ++p) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<float> partial(chunks, 0.0f);
    pool_.ParallelFor(chunks, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) partial[c] = Sum(buffer_ + n_ / chunks * c, n_ / chunks);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (float v : partial) sink = sink + v;
    if (p > 0) rates.push_back(static_cast<double>(n_) * sizeof(float) / s);  // first pass warms up
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

}  // namespace moeserve
