// Rotate-half RoPE (spec deco.md §3.2) from the host-computed cos/sin tables, which are the
// CPU engine's RopeTable values (fp32 inv_freq, angles in double).
#include "engine/backend/cuda/kernels.h"

namespace moeserve::cuda {
namespace {

// One block per token; threads over (head, i < hd/2) of q then k.
__global__ void RopeKernel(float* q, float* k, const float* cos, const float* sin, const int32_t* positions,
                           int nh, int ng, int hd) {
  const int t = blockIdx.x, half = hd / 2;
  const float* c = cos + static_cast<int64_t>(positions[t]) * half;
  const float* s = sin + static_cast<int64_t>(positions[t]) * half;
  const int total = (nh + ng) * half;
  for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
    const int head = idx / half, i = idx % half;
    float* v = head < nh ? q + (static_cast<int64_t>(t) * nh + head) * hd
                         : k + (static_cast<int64_t>(t) * ng + (head - nh)) * hd;
    const float a = v[i], b = v[i + half];
    v[i] = a * c[i] - b * s[i];
    v[i + half] = b * c[i] + a * s[i];
  }
}

}  // namespace

void LaunchRope(float* q, float* k, const float* cos, const float* sin, const int32_t* positions, int T, int nh,
                int ng, int hd, cudaStream_t stream) {
  if (T > 0) RopeKernel<<<T, 128, 0, stream>>>(q, k, cos, sin, positions, nh, ng, hd);
}

}  // namespace moeserve::cuda
