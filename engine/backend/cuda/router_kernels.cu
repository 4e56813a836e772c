// Device routers: one block per token, the token's logits in shared memory. Each family
// mirrors its host reference (engine/moe/{deco,topk,remoe,topp,lapsum}_router.cc) expression by
// expression: sums that the host accumulates serially in double are accumulated serially by
// thread 0 in the same order; orderings ("top-k, ties to the lower id", TopP's stable sort) are
// computed as ranks, O(E²) per token, which is cheap for E ≤ kMaxDeviceExperts. This file is
// compiled without --use_fast_math and with --fmad=false (engine/backend/cuda/CMakeLists.txt),
// so sqrt and divisions are IEEE and nothing is contracted, like the x86-64 host; expf/exp/log
// may differ from glibc by an ulp, which can move an expert only at a near-tie.
#include <cfloat>
#include <cmath>

#include "engine/backend/cuda/kernels.h"

namespace moeserve::cuda {
namespace {

constexpr int kThreads = 256;

// Shared memory of one token, carved from the dynamic allocation (doubles first, for alignment).
struct TokenSmem {
  double* d0;  // LapSum: sorted logits [E]
  double* d1;  // LapSum: gaps, then A [E]
  double* d2;  // LapSum: B [E]
  float* l;    // logits [E]
  float* s1;   // family scratch [E] (scores, r, q, p)
  float* s2;   // family scratch [E] (selection scores, sorted q)
  float* w;    // output weights [E]
  uint8_t* f;  // output flags [E]
};

__device__ TokenSmem Carve(unsigned char* base, int E, bool lapsum) {
  TokenSmem s;
  double* d = reinterpret_cast<double*>(base);
  s.d0 = d;
  s.d1 = d + E;
  s.d2 = d + 2 * E;
  float* f = reinterpret_cast<float*>(base + (lapsum ? 3 * E * sizeof(double) : 0));
  s.l = f;
  s.s1 = f + E;
  s.s2 = f + 2 * E;
  s.w = f + 3 * E;
  s.f = reinterpret_cast<uint8_t*>(f + 4 * E);
  return s;
}

// Rank of e in descending order of v, ties to the lower id (std::partial_sort/stable_sort
// with the hosts' comparators).
__device__ int RankDesc(const float* v, int n, int e) {
  const float x = v[e];
  int rank = 0;
  for (int j = 0; j < n; ++j) rank += (v[j] > x || (v[j] == x && j < e)) ? 1 : 0;
  return rank;
}

// --- DECO / BlockFFN (deco_router.cc) --------------------------------------------------------
__device__ void RouteDeco(const RouterArgs& a, const TokenSmem& s, float min_weight) {
  const int n = a.E;
  __shared__ float bias_scale, inv_f;
  __shared__ double mean_d, inv_d;
  const float* l = s.l;
  float* r = s.s1;
  if (threadIdx.x == 0) {
    bias_scale = 1.0f;
    if (a.expert_bias != nullptr && a.bias_rms) {
      double sq = 0;
      for (int e = 0; e < n; ++e) sq += double{l[e]} * l[e];
      bias_scale = static_cast<float>(sqrt(sq / n));
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    float v = l[e] > 0.0f ? l[e] : 0.0f;
    if (v != 0.0f && a.expert_bias != nullptr && !(l[e] + a.expert_bias[e] * bias_scale > 0.0f)) v = 0.0f;
    r[e] = v;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    if (a.norm == RouterNormType::kRms) {
      double sq = 0;
      for (int e = 0; e < n; ++e) sq += double{r[e]} * r[e];
      inv_f = static_cast<float>(1.0 / sqrt(sq / n + a.epsilon));
    } else if (a.norm == RouterNormType::kNormal) {
      double sum = 0;
      for (int e = 0; e < n; ++e) sum += r[e];
      const double mean = sum / n;
      double sq = 0;
      for (int e = 0; e < n; ++e) sq += (r[e] - mean) * (r[e] - mean);
      mean_d = mean;
      inv_d = 1.0 / sqrt(sq / n + a.epsilon);
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    const float we = a.norm_weight == nullptr ? 1.0f : a.norm_weight[a.norm_weight_size == 1 ? 0 : e];
    float g = 0.0f;
    bool routed = r[e] != 0.0f;
    switch (a.norm) {
      case RouterNormType::kSimple: g = r[e] * we; break;
      case RouterNormType::kRms: g = r[e] * inv_f * we; break;
      case RouterNormType::kNormal:  // centring: every expert is evaluated
        g = static_cast<float>((r[e] - mean_d) * inv_d) * we;
        routed = true;
        break;
      case RouterNormType::kNull: g = r[e]; break;
    }
    // Budget: |g| < min_weight drops the entry (it is then neither evaluated nor active).
    if (routed && min_weight > 0.0f && fabsf(g) < min_weight) routed = false;
    s.w[e] = routed ? g : 0.0f;
    s.f[e] = routed ? (kRouted | (r[e] != 0.0f ? kActive : 0)) : 0;
  }
}

// --- top-k (topk_router.cc) ------------------------------------------------------------------
__device__ void RouteTopK(const RouterArgs& a, const TokenSmem& s, int max_experts) {
  const int n = a.E;
  int k = max_experts > 0 ? min(a.topk, max_experts) : a.topk;
  k = min(k, n);
  float* score = s.s1;
  float* select = s.s2;
  const float* l = s.l;
  __shared__ float bias_scale, m_shared;
  __shared__ double sum_shared;
  if (!a.softmax) {
    for (int e = threadIdx.x; e < n; e += blockDim.x) score[e] = 1.0f / (1.0f + expf(-l[e]));
  } else if (a.pre_softmax) {
    if (threadIdx.x == 0) {
      float m = -INFINITY;
      for (int e = 0; e < n; ++e) m = fmaxf(m, l[e]);
      m_shared = m;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < n; e += blockDim.x) score[e] = expf(l[e] - m_shared);
    __syncthreads();
    if (threadIdx.x == 0) {
      double sum = 0;
      for (int e = 0; e < n; ++e) sum += score[e];
      sum_shared = sum;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < n; e += blockDim.x) score[e] = static_cast<float>(score[e] / sum_shared);
  } else {
    for (int e = threadIdx.x; e < n; e += blockDim.x) score[e] = l[e];  // post-softmax: raw logits
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    bias_scale = 1.0f;
    if (a.expert_bias != nullptr && a.bias_rms) {
      double sq = 0;
      for (int e = 0; e < n; ++e) sq += double{score[e]} * score[e];
      bias_scale = static_cast<float>(sqrt(sq / n));
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    select[e] = score[e] + (a.expert_bias == nullptr ? 0.0f : a.expert_bias[e] * bias_scale);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < n; e += blockDim.x) s.f[e] = RankDesc(select, n, e) < k ? (kRouted | kActive) : 0;
  __syncthreads();
  // Weights over the selected set, summed in ascending id order as the host does.
  const bool post_softmax = a.softmax && !a.pre_softmax;
  if (threadIdx.x == 0) {
    if (post_softmax) {
      float m = -INFINITY;
      for (int e = 0; e < n; ++e) {
        if (s.f[e]) m = fmaxf(m, score[e]);
      }
      double sum = 0;
      for (int e = 0; e < n; ++e) {
        if (s.f[e]) sum += expf(score[e] - m);
      }
      m_shared = m;
      sum_shared = sum;
    } else {
      double sum = 0;
      for (int e = 0; e < n; ++e) {
        if (s.f[e]) sum += score[e];
      }
      sum_shared = sum;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    float w = 0.0f;
    if (s.f[e]) {
      if (post_softmax) {
        w = static_cast<float>(expf(score[e] - m_shared) / sum_shared);
      } else {
        w = k > 1 ? static_cast<float>(score[e] / (sum_shared + 1e-20)) : score[e];
      }
      w *= a.scale;
    }
    s.w[e] = w;
  }
}

// --- ReMoE (remoe_router.cc) -----------------------------------------------------------------
__device__ void RouteReMoE(const RouterArgs& a, const TokenSmem& s, float min_weight) {
  const int n = a.E;
  const float* l = s.l;
  float* pos = s.s1;  // the logit where positive, else −inf (never ranked above a positive)
  __shared__ int positives;
  if (threadIdx.x == 0) positives = 0;
  __syncthreads();
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    pos[e] = l[e] > 0.0f ? l[e] : -INFINITY;
    if (l[e] > 0.0f) atomicAdd(&positives, 1);
  }
  __syncthreads();
  const bool clamp = a.remoe_keep >= 0 && positives > a.remoe_keep;
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    bool routed = l[e] > 0.0f;
    if (routed && clamp) routed = RankDesc(pos, n, e) < a.remoe_keep;  // largest first, lower id on ties
    if (routed && min_weight > 0.0f && l[e] < min_weight) routed = false;
    s.f[e] = routed ? (kRouted | kActive) : 0;
    s.w[e] = routed ? l[e] : 0.0f;
  }
}

// --- TopP (topp_router.cc) -------------------------------------------------------------------
__device__ void RouteTopP(const RouterArgs& a, const TokenSmem& s, int max_experts) {
  const int n = a.E;
  const float* l = s.l;
  float* q = s.s1;
  float* sorted = s.s2;
  __shared__ double total_shared;
  __shared__ int count_shared;
  if (threadIdx.x == 0) {
    double total = 0;
    for (int e = 0; e < n; ++e) total += fabsf(l[e]);
    total_shared = total;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < n; e += blockDim.x) q[e] = static_cast<float>(fabsf(l[e]) / (total_shared + 1e-20));
  __syncthreads();
  for (int e = threadIdx.x; e < n; e += blockDim.x) sorted[RankDesc(q, n, e)] = q[e];  // stable: ties by id
  __syncthreads();
  if (threadIdx.x == 0) {
    // Rank j is in the prefix iff the mass before it has not yet exceeded p (serial, in rank
    // order, exactly the host's sum); zero scores sort last and are not counted.
    double before = 0;
    int count = 0;
    for (int j = 0; j < n; ++j) {
      if (before > a.topp) break;
      before += sorted[j];
      if (sorted[j] > 0.0f) ++count;
    }
    if (max_experts > 0) count = min(count, max_experts);
    count_shared = count;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    const bool routed = RankDesc(q, n, e) < count_shared;
    s.f[e] = routed ? (kRouted | kActive) : 0;
    s.w[e] = routed ? q[e] : 0.0f;
  }
}

// --- LapSum (lapsum_router.cc, engine/moe/lapsum_router.cc's LapSumSoftTopK/Threshold) ------
__device__ double ClampK(double k, int n) {
  const double lo = 1e-6, hi = n - 1e-6;
  if (!(k >= lo)) return lo;
  return k > hi ? hi : k;
}

__device__ void RouteLapSum(const RouterArgs& a, const TokenSmem& s, float k_scale) {
  const int n = a.E;
  const float* l = s.l;
  float* p = s.s1;
  double* zs = s.d0;
  double* G = s.d1;  // gaps e^(u_j − u_{j+1}), then A in place
  double* B = s.d2;
  __shared__ int nonfinite, m_shared, anchor_shared, cap_shared;
  __shared__ double k_shared, delta_shared;
  __shared__ float theta0_shared, lo_shared, hi_shared;
  if (threadIdx.x == 0) nonfinite = 0;
  __syncthreads();
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    if (!isfinite(l[e])) nonfinite = 1;
  }
  __syncthreads();
  if (nonfinite) {  // a broken hidden state: every expert with a NaN weight (host behaviour)
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
      s.f[e] = kRouted | kActive;
      s.w[e] = __int_as_float(0x7fc00000);
    }
    return;
  }
  if (threadIdx.x == 0) {
    double k = a.lapsum_k;
    int cap = a.lapsum_cap;
    float theta0 = a.lapsum_theta0;
    if (k_scale != 1.0f) {  // MakeLapSumConstants for the scaled k
      k = ClampK(k * k_scale, n);
      const double c = ceil(a.cap_coeff * k);
      cap = c >= n ? n : max(1, static_cast<int>(c));
      theta0 = static_cast<float>(a.threshold_coeff * k / n);
    }
    k_shared = ClampK(k, n);
    cap_shared = min(max(cap, 1), n);
    theta0_shared = theta0;
  }
  // Sorted logits (ascending; equal values are interchangeable).
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    const float x = l[e];
    int rank = 0;
    for (int j = 0; j < n; ++j) rank += (l[j] < x || (l[j] == x && j < e)) ? 1 : 0;
    zs[rank] = x;
  }
  __syncthreads();
  const double alpha = a.alpha;
  for (int j = threadIdx.x; j < n - 1; j += blockDim.x) G[j] = exp((zs[j] - zs[j + 1]) / alpha);
  __syncthreads();
  if (threadIdx.x == 0) {
    B[0] = 1.0;
    for (int j = 1; j < n; ++j) B[j] = 1.0 + B[j - 1] * G[j - 1];
    G[n - 1] = 1.0;  // A in place, from the top: A_j = 1 + A_{j+1}·gap_j reads gap_j first
    for (int j = n - 2; j >= 0; --j) G[j] = 1.0 + G[j + 1] * G[j];
  }
  __syncthreads();
  const double* A = G;
  const double k = k_shared;
  const double w = n - k;
  if (threadIdx.x == 0) m_shared = 0;
  __syncthreads();
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    if ((j + 0.5 + 0.5 * (A[j] - B[j])) < w) atomicAdd(&m_shared, 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int m = m_shared;
    int anchor;
    double delta;
    if (m == 0) {
      anchor = 0;
      delta = log(2.0 * w / A[0]);
    } else if (m == n) {
      anchor = n - 1;
      delta = log(B[n - 1] / (2.0 * k));
    } else {
      const double e = w - m;
      const double Bl = B[m - 1], Ah = A[m];
      const double du = (zs[m - 1] - zs[m]) / alpha;
      if (e == 0.0) {
        anchor = m - 1;
        delta = -0.5 * du + 0.5 * log(Bl / Ah);
      } else {
        const double D = sqrt(e * e + Ah * Bl * exp(du));
        if (e > 0.0) {
          anchor = m;
          delta = log(e + D) - log(Ah);
        } else {
          anchor = m - 1;
          delta = log(Bl) - log(D - e);
        }
      }
    }
    anchor_shared = anchor;
    delta_shared = delta;
  }
  __syncthreads();
  const double z_anchor = zs[anchor_shared];
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const double t = (l[i] - z_anchor) / alpha - delta_shared;
    p[i] = static_cast<float>(t <= 0.0 ? 0.5 * exp(t) : 1.0 - 0.5 * exp(-t));
  }
  __syncthreads();
  // θ = clamp(θ0, cap-th largest p, largest p) (LapSumThreshold).
  const int cap = cap_shared;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    int gt = 0, ge = 0;
    for (int j = 0; j < n; ++j) {
      gt += p[j] > p[i] ? 1 : 0;
      ge += p[j] >= p[i] ? 1 : 0;
    }
    if (gt < cap && cap <= ge) lo_shared = p[i];  // every writer writes the same value
    if (gt == 0) hi_shared = p[i];
  }
  __syncthreads();
  const float theta = fminf(fmaxf(theta0_shared, lo_shared), hi_shared);
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    const bool routed = p[e] >= theta;
    s.f[e] = routed ? (kRouted | kActive) : 0;
    s.w[e] = routed ? p[e] : 0.0f;
  }
}

__global__ void RouteKernel(RouterArgs a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int t = blockIdx.x, E = a.E;
  const TokenSmem s = Carve(smem, E, a.kind == RouterKind::kLapSum);
  const float* logits = a.logits + static_cast<int64_t>(t) * E;
  for (int e = threadIdx.x; e < E; e += blockDim.x) s.l[e] = logits[e];
  __syncthreads();
  switch (a.kind) {
    case RouterKind::kDecoRelu: RouteDeco(a, s, a.min_weight[t]); break;
    case RouterKind::kTopK: RouteTopK(a, s, a.max_experts[t]); break;
    case RouterKind::kReMoE: RouteReMoE(a, s, a.min_weight[t]); break;
    case RouterKind::kTopP: RouteTopP(a, s, a.max_experts[t]); break;
    case RouterKind::kLapSum: RouteLapSum(a, s, a.k_scale[t]); break;
  }
  __syncthreads();
  __shared__ int active;
  if (threadIdx.x == 0) active = 0;
  __syncthreads();
  uint8_t* flags = a.flags + static_cast<int64_t>(t) * E;
  float* weight = a.weight + static_cast<int64_t>(t) * E;
  int mine = 0;
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    flags[e] = s.f[e];
    weight[e] = s.w[e];
    mine += (s.f[e] & kActive) ? 1 : 0;
  }
  if (mine != 0) atomicAdd(&active, mine);
  __syncthreads();
  if (threadIdx.x == 0) a.num_active[t] = active;
}

}  // namespace

void LaunchRoute(const RouterArgs& a, cudaStream_t stream) {
  if (a.T == 0) return;
  const bool lapsum = a.kind == RouterKind::kLapSum;
  const size_t smem = (lapsum ? 3 * a.E * sizeof(double) : 0) + 4 * a.E * sizeof(float) + a.E;
  RouteKernel<<<a.T, kThreads, smem, stream>>>(a);
}

}  // namespace moeserve::cuda
