#include "engine/backend/cuda/routing_readback.h"

#include <algorithm>

#include "engine/backend/cuda/kernels.h"

namespace moeserve::cuda {

void RoutingFromDense(const uint8_t* flags, const float* weight, const int32_t* num_active, int64_t T, int E,
                      Routing& out) {
  out.Clear();
  for (int64_t t = 0; t < T; ++t) {
    const uint8_t* f = flags + t * E;
    const float* w = weight + t * E;
    for (int e = 0; e < E; ++e) {
      if (f[e] & kRouted) out.Add(e, w[e], (f[e] & kActive) != 0);
    }
    out.EndToken(num_active[t]);
  }
}

void DenseFromRouting(const Routing& r, int E, uint8_t* flags, float* weight, int32_t* num_active) {
  const int64_t T = r.num_tokens();
  std::fill(flags, flags + T * E, uint8_t{0});
  std::fill(weight, weight + T * E, 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    for (int32_t i = r.offsets[t]; i < r.offsets[t + 1]; ++i) {
      flags[t * E + r.experts[i]] = kRouted | (r.active[i] ? kActive : 0);
      weight[t * E + r.experts[i]] = r.weights[i];
    }
    num_active[t] = r.num_active[t];
  }
}

}  // namespace moeserve::cuda
