// The double-precision statistics of norms and token means (f64_sums.h): within a few ulp of
// an exactly rounded sum at every length around the 8-lane blocks, elements past the end
// contributing nothing, and a row's result independent of where the row sits in memory.
#include "engine/kernels/cpu/f64_sums.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace moeserve {
namespace {

// Σ in long double, in order: the reference the 8-lane sums must match closely.
long double Exact(const std::vector<float>& a, const std::vector<float>& b, int64_t n) {
  long double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<long double>(a[i]) * b[i];
  return s;
}

TEST(F64Sums, MatchLongDoubleSumsAtEveryLengthAroundTheBlocks) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.5f, 2.0f);
  for (const int64_t n : {0, 1, 5, 7, 8, 9, 15, 16, 17, 64, 768, 1001}) {
    std::vector<float> a(n + 8), b(n + 8);
    for (float& v : a) v = normal(rng);
    for (float& v : b) v = normal(rng);
    // Values past n that would show up if a tail read them.
    for (int64_t i = n; i < n + 8; ++i) a[i] = b[i] = 1e6f;
    std::vector<float> ones(n + 8, 1.0f);
    long double mean = n > 0 ? Exact(a, ones, n) / n : 0;
    long double deviations = 0;
    for (int64_t i = 0; i < n; ++i) deviations += (a[i] - mean) * (a[i] - mean);
    const double tol = 1e-14 * (1.0 + n);
    const long double magnitude = 1 + std::fabs(Exact(a, a, n));
    EXPECT_NEAR(DotF64(a.data(), b.data(), n), Exact(a, b, n), tol * magnitude) << "n=" << n;
    EXPECT_NEAR(SumSquaresF64(a.data(), n), Exact(a, a, n), tol * magnitude) << "n=" << n;
    EXPECT_NEAR(SumF64(a.data(), n), Exact(a, ones, n), tol * magnitude) << "n=" << n;
    // A mean far from zero: lanes past n would add mean² each if they were not cleared.
    EXPECT_NEAR(SumSquaredDeviationsF64(a.data(), n, static_cast<double>(mean)), deviations, tol * magnitude)
        << "n=" << n;
    EXPECT_NEAR(SumSquaredDeviationsF64(a.data(), n, 100.0), Exact(a, a, n) - 200.0L * Exact(a, ones, n) + 1e4L * n,
                1e-12 * (1 + 1e4 * n))
        << "n=" << n;
  }
}

TEST(F64Sums, ARowsResultDoesNotDependOnItsAddress) {
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = 771;
  std::vector<float> row(n);
  for (float& v : row) v = normal(rng);
  const double want = SumSquaresF64(row.data(), n);
  for (int64_t offset = 1; offset < 8; ++offset) {
    std::vector<float> shifted(n + offset);
    std::copy(row.begin(), row.end(), shifted.begin() + offset);
    EXPECT_EQ(SumSquaresF64(shifted.data() + offset, n), want) << "offset " << offset;
  }
}

}  // namespace
}  // namespace moeserve
