// SoftMoE routing (spec softmoe.md §2-§4): LapSum soft top-k of the fp32 router logits with
// the layer's target k_l, then truncation to { p ≥ θ }. Active experts keep their soft weight
// p_e, unnormalised; the fan-out varies per token from 1 to cap_l (all n on ties).
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "engine/moe/lapsum.h"
#include "engine/moe/router.h"

namespace moeserve {

double ClampLapSumK(double k, int n) {
  const double lo = 1e-6, hi = n - 1e-6;
  if (!(k >= lo)) return lo;  // also NaN
  return k > hi ? hi : k;
}

LapSumConstants MakeLapSumConstants(double k, int n, double threshold_coeff, double cap_coeff) {
  LapSumConstants c;
  c.k = ClampLapSumK(k, n);
  const double cap = std::ceil(cap_coeff * c.k);
  c.cap = cap >= n ? n : std::max(1, static_cast<int>(cap));
  c.theta0 = static_cast<float>(threshold_coeff * c.k / n);
  return c;
}

double LapSumSoftTopK(const float* z, int n, double k, double alpha, float* p, double* work) {
  k = ClampLapSumK(k, n);
  // Only differences of two fp32 logits are ever formed (each exact in float64 unless their
  // magnitudes are ~2^29 apart, and then the small one is irrelevant), divided by α and
  // exponentiated only when ≤ 0. A constant offset of the logits that is exact in fp32 changes
  // nothing, and no magnitude overflows.
  double* zs = work;         // logits ascending: zs_1 ≤ … ≤ zs_n (here 0-based); u = zs/α
  double* A = work + n;      // A_j = Σ_{i≥j} e^(u_j − u_i)
  double* B = work + 2 * n;  // B_j = Σ_{i≤j} e^(u_i − u_j)
  for (int i = 0; i < n; ++i) zs[i] = z[i];
  std::sort(zs, zs + n);
  auto gap = [&](int i, int j) { return (zs[i] - zs[j]) / alpha; };  // u_i − u_j
  B[0] = 1.0;
  for (int j = 1; j < n; ++j) B[j] = 1.0 + B[j - 1] * std::exp(gap(j - 1, j));
  A[n - 1] = 1.0;
  for (int j = n - 2; j >= 0; --j) A[j] = 1.0 + A[j + 1] * std::exp(gap(j, j + 1));
  // Counting function at the knots: V_j = S(α·u_j) = j + ½ + ½(A_j − B_j) (0-based j).
  // m = #{ j : V_j < w } by a linear scan (V may be non-monotone by an ulp on ties).
  const double w = n - k;
  int m = 0;
  for (int j = 0; j < n; ++j) m += (j + 0.5 + 0.5 * (A[j] - B[j])) < w ? 1 : 0;
  // b (the threshold in units of α) lies between the m-th and (m+1)-th knot (1-based); solve
  // S(α·b) = w there. b is kept as anchor knot + offset, b = u_anchor + delta, so that
  // p_i = F(u_i − b) = F((z_i − z_anchor)/α − delta) again uses differences only.
  int anchor;
  double delta;
  if (m == 0) {
    anchor = 0;
    delta = std::log(2.0 * w / A[0]);
  } else if (m == n) {
    anchor = n - 1;
    delta = std::log(B[n - 1] / (2.0 * k));
  } else {
    const double e = w - m;
    const double Bl = B[m - 1], Ah = A[m];
    const double du = gap(m - 1, m);  // u_m − u_{m+1} (1-based), ≤ 0
    if (e == 0.0) {
      // Closed form ½(u_m + u_{m+1}) + ½·ln(B_m / A_{m+1}); also safe when e^(du) underflows
      // (D would be 0 and ln D = −∞).
      anchor = m - 1;
      delta = -0.5 * du + 0.5 * std::log(Bl / Ah);
    } else {
      const double D = std::sqrt(e * e + Ah * Bl * std::exp(du));
      // The two rationalisations of the same root; each avoids cancellation on its side.
      if (e > 0.0) {
        anchor = m;
        delta = std::log(e + D) - std::log(Ah);
      } else {
        anchor = m - 1;
        delta = std::log(Bl) - std::log(D - e);
      }
    }
  }
  const double z_anchor = zs[anchor];
  for (int i = 0; i < n; ++i) {
    const double t = (z[i] - z_anchor) / alpha - delta;
    p[i] = static_cast<float>(t <= 0.0 ? 0.5 * std::exp(t) : 1.0 - 0.5 * std::exp(-t));
  }
  return z_anchor + alpha * delta;
}

float LapSumThreshold(const float* p, int n, int cap, float theta0, float* sorted) {
  cap = std::clamp(cap, 1, n);
  std::copy(p, p + n, sorted);
  std::nth_element(sorted, sorted + (cap - 1), sorted + n, std::greater<float>());
  const float lo = sorted[cap - 1];
  const float hi = *std::max_element(p, p + n);
  return std::min(std::max(theta0, lo), hi);
}

namespace {

class LapSumRouter final : public Router {
 public:
  explicit LapSumRouter(const RouterSpec& spec) : spec_(spec) {}

 private:
  void Route(const float* l, const ExpertBudget& budget, RouterScratch& scratch, Routing& out) const override {
    const int n = spec_.num_experts;
    for (int e = 0; e < n; ++e) {
      if (!std::isfinite(l[e])) {
        // Non-finite logits (a broken hidden state): evaluate every expert with a NaN weight
        // so the token's logits turn NaN and the serving loop ends the sequence with an error.
        for (int x = 0; x < n; ++x) out.Add(x, std::numeric_limits<float>::quiet_NaN(), true);
        out.EndToken(n);
        return;
      }
    }
    double k = spec_.lapsum_k;
    int cap = spec_.lapsum_cap;
    float theta0 = spec_.lapsum_theta0;
    if (budget.k_scale != 1.0f) {  // serve-time budget: scale k_l, recompute cap and θ0
      const LapSumConstants c =
          MakeLapSumConstants(k * budget.k_scale, n, spec_.threshold_coeff, spec_.cap_coeff);
      k = c.k;
      cap = c.cap;
      theta0 = c.theta0;
    }
    scratch.values.resize(2 * static_cast<size_t>(n));
    scratch.work.resize(3 * static_cast<size_t>(n));
    float* p = scratch.values.data();
    LapSumSoftTopK(l, n, k, spec_.lapsum_scale, p, scratch.work.data());
    const float theta = LapSumThreshold(p, n, cap, theta0, p + n);
    int active = 0;
    for (int e = 0; e < n; ++e) {
      if (p[e] >= theta) {
        out.Add(e, p[e], true);
        ++active;
      }
    }
    out.EndToken(active);
  }

  RouterSpec spec_;
};

}  // namespace

std::unique_ptr<Router> MakeLapSumRouter(const RouterSpec& spec) { return std::make_unique<LapSumRouter>(spec); }

}  // namespace moeserve
