// Paged-KV store and causal GQA attention over the paged cache, for prefill and decode alike:
// one block per (token, query head), online softmax over chunks of positions, so the shared
// memory does not depend on the context length.
#include <cfloat>

#include "engine/backend/cuda/kernels.h"
#include "engine/backend/cuda/reduce.cuh"

namespace moeserve::cuda {
namespace {

constexpr int kThreads = 128;  // 4 warps
constexpr int kChunk = 64;     // positions scored per round
constexpr int kMaxHeadDim = 256;

__device__ __forceinline__ int64_t SlotOffset(const PagedKv& kv, const TokenPlacementView& place, int t, int pos) {
  const int32_t block = place.tables[place.table_begin[t] + pos / kv.block_size];
  return (static_cast<int64_t>(block) * kv.block_size + pos % kv.block_size) * kv.num_kv_heads * kv.head_dim;
}

__global__ void KvStoreKernel(const float* k, const float* v, PagedKv kv, TokenPlacementView place) {
  const int t = blockIdx.x;
  const int row = kv.num_kv_heads * kv.head_dim;
  const int64_t dst = SlotOffset(kv, place, t, place.positions[t]);
  for (int i = threadIdx.x; i < row; i += blockDim.x) {
    kv.keys[dst + i] = __float2bfloat16(k[static_cast<int64_t>(t) * row + i]);
    kv.values[dst + i] = __float2bfloat16(v[static_cast<int64_t>(t) * row + i]);
  }
}

__global__ void AttentionKernel(const float* q, PagedKv kv, TokenPlacementView place, int nh, bf16* out) {
  __shared__ float q_s[kMaxHeadDim];
  __shared__ float scores[kChunk];
  const int t = blockIdx.x / nh, head = blockIdx.x % nh;
  const int hd = kv.head_dim;
  const int kv_head = head / (nh / kv.num_kv_heads);
  const int last = place.positions[t];
  const float scale = rsqrtf(static_cast<float>(hd));
  const float* qh = q + (static_cast<int64_t>(t) * nh + head) * hd;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) q_s[i] = qh[i];
  __syncthreads();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  // Thread owns output dims threadIdx.x and threadIdx.x + kThreads (hd ≤ 256).
  float acc0 = 0.0f, acc1 = 0.0f, running_max = -FLT_MAX, running_sum = 0.0f;
  const int d0 = threadIdx.x, d1 = threadIdx.x + kThreads;
  for (int start = 0; start <= last; start += kChunk) {
    const int n = min(kChunk, last + 1 - start);
    for (int p = warp; p < n; p += warps) {
      const bf16* kp = kv.keys + SlotOffset(kv, place, t, start + p) + kv_head * hd;
      float s = 0.0f;
      for (int i = lane; i < hd; i += 32) s += q_s[i] * __bfloat162float(kp[i]);
      s = WarpSum(s);
      if (lane == 0) scores[p] = s * scale;
    }
    __syncthreads();
    float chunk_max = -FLT_MAX;
    for (int p = 0; p < n; ++p) chunk_max = fmaxf(chunk_max, scores[p]);
    const float new_max = fmaxf(running_max, chunk_max);
    const float rescale = __expf(running_max - new_max);
    acc0 *= rescale;
    acc1 *= rescale;
    running_sum *= rescale;
    for (int p = 0; p < n; ++p) {
      const float w = __expf(scores[p] - new_max);
      running_sum += w;
      const bf16* vp = kv.values + SlotOffset(kv, place, t, start + p) + kv_head * hd;
      if (d0 < hd) acc0 += w * __bfloat162float(vp[d0]);
      if (d1 < hd) acc1 += w * __bfloat162float(vp[d1]);
    }
    running_max = new_max;
    __syncthreads();  // scores are rewritten by the next chunk
  }
  const float inv = 1.0f / running_sum;
  bf16* o = out + (static_cast<int64_t>(t) * nh + head) * hd;
  if (d0 < hd) o[d0] = __float2bfloat16(acc0 * inv);
  if (d1 < hd) o[d1] = __float2bfloat16(acc1 * inv);
}

}  // namespace

void LaunchKvStore(const float* k, const float* v, PagedKv kv, TokenPlacementView place, int T,
                   cudaStream_t stream) {
  if (T > 0) KvStoreKernel<<<T, kThreads, 0, stream>>>(k, v, kv, place);
}

void LaunchPagedAttention(const float* q, PagedKv kv, TokenPlacementView place, int T, int nh, bf16* out,
                          cudaStream_t stream) {
  if (T > 0) AttentionKernel<<<T * nh, kThreads, 0, stream>>>(q, kv, place, nh, out);
}

}  // namespace moeserve::cuda
