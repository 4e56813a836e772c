// The LapSum soft top-k operator and SoftMoE's truncation (spec softmoe.md §2-§3), as plain
// functions: the router (lapsum_router.cc) is built on them, and tests and probes call them
// directly.
#ifndef MOESERVE_ENGINE_MOE_LAPSUM_H_
#define MOESERVE_ENGINE_MOE_LAPSUM_H_

namespace moeserve {

// The operator's domain for k: 0 < k < n, clamped to [1e-6, n − 1e-6] (spec §2.3).
double ClampLapSumK(double k, int n);

// Per-layer truncation constants of spec §7.2.1, in float64: k clamped to its domain,
// cap = min(⌈γ·k⌉, n) (at least 1) and θ0 = c·k/n rounded to fp32.
struct LapSumConstants {
  double k = 1.0;
  int cap = 1;
  float theta0 = 0.0f;
};
LapSumConstants MakeLapSumConstants(double k, int n, double threshold_coeff, double cap_coeff);

// p_i = F((z_i − τ)/α) for i < n with Σ p = k (k is clamped to its domain), F the standard
// Laplace CDF, by the exact sorted closed form of spec §2.2. Only differences of logits are
// exponentiated (shift-invariant, no overflow; a constant offset that is exact in fp32 gives
// bit-identical p); the threshold is solved in float64 and p is rounded to fp32.
// `work` holds at least 3·n doubles. Returns τ in logit units. n >= 1, α > 0, logits finite.
double LapSumSoftTopK(const float* z, int n, double k, double alpha, float* p, double* work);

// Truncation of spec §3: θ = clamp(θ0, lo, hi) with lo the cap-th largest p and hi the
// largest; the active set is { i : p_i ≥ θ } (ties all kept). `sorted` holds n floats of
// scratch. Returns θ.
float LapSumThreshold(const float* p, int n, int cap, float theta0, float* sorted);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_MOE_LAPSUM_H_
