// Routed-expert kernels over the compacted (token, expert) pairs of one MoE layer.
//
// Up: one block per tile (≤ kMaxTile slots of one expert). Each warp takes weight rows of the
// expert, reads each row once and dots it with every token of the tile (so an expert's rows are
// read once per tile, i.e. once per step for decode batches), then the block applies the
// activation in shared memory: NormSiLU with the exact all-expert mean (spec deco.md §3.3),
// per-block RMS over d, γ, SiLU, the gate product, and the routing weight (score scaling).
// The tile table comes from the device (expert_grouping.cu): launches are sized for the worst
// case (MaxExpertTiles) and blocks walk the tiles that exist, so no launch depends on host data.
// Down, per token: one warp per output row; for every token it walks only that token's active
// experts' d-wide slices of the row (spec deco.md §8), one reduction per (row, token).
// Down, expert-major (decode and small batches): one warp per (tile, output row) reads the
// expert's row slice once for every slot of the tile, then a combine kernel sums each token's
// per-slot partials in its own entry order.
#include "engine/backend/cuda/kernels.h"
#include "engine/backend/cuda/reduce.cuh"

namespace moeserve::cuda {
namespace {

constexpr int kMaxTile = 8;
constexpr int kUpThreads = 256;
constexpr int kDownWarps = 8;
constexpr int kDownTokenTile = 16;
constexpr int kSmemBudget = 32 * 1024;
constexpr int kMaxUpBlocks = 2048;     // grid-stride over the tiles beyond this
constexpr int kMaxDownTileBlocks = 1024;
constexpr int kCombineThreads = 256;

__device__ __forceinline__ void Load8(const bf16* p, float out[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

// acc[i] += dot(w_row, x_i) partial sums of this lane, for i < n.
__device__ __forceinline__ void RowDots(const bf16* w, const float* const* x, int n, int H, bool vec8, float* acc) {
  const int lane = threadIdx.x & 31;
  if (vec8) {
    for (int k = lane * 8; k < H; k += 32 * 8) {
      float wv[8];
      Load8(w + k, wv);
#pragma unroll
      for (int i = 0; i < kMaxTile; ++i) {
        if (i >= n) break;
        const float4 a = *reinterpret_cast<const float4*>(x[i] + k);
        const float4 b = *reinterpret_cast<const float4*>(x[i] + k + 4);
        acc[i] += wv[0] * a.x + wv[1] * a.y + wv[2] * a.z + wv[3] * a.w + wv[4] * b.x + wv[5] * b.y +
                  wv[6] * b.z + wv[7] * b.w;
      }
    }
  } else {
    for (int k = lane; k < H; k += 32) {
      const float wv = __bfloat162float(w[k]);
#pragma unroll
      for (int i = 0; i < kMaxTile; ++i) {
        if (i >= n) break;
        acc[i] += wv * x[i][k];
      }
    }
  }
}

__device__ void ExpertUpTile(const ExpertUpArgs& a, int tile, float* smem) {
  const int e = a.tile_expert[tile], begin = a.tile_begin[tile], n = a.tile_count[tile];
  const int d = a.d, H = a.H;
  const bool gated = a.gate != nullptr;
  float* z = smem;                  // [max_tile][d] activation input
  float* u = smem + a.max_tile * d;  // [max_tile][d] up factor (gated only)
  const float* x[kMaxTile];
#pragma unroll
  for (int i = 0; i < kMaxTile; ++i) {
    x[i] = i < n ? a.m + static_cast<int64_t>(a.slot_token[begin + i]) * H : a.m;
  }
  const bool vec8 = (H % 8) == 0;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const bf16* act_w = gated ? a.gate : a.up;
  const float* act_b = gated ? a.gate_bias : a.up_bias;
  for (int j = warp; j < d; j += warps) {
    const int64_t row = static_cast<int64_t>(e) * d + j;
    float acc[kMaxTile] = {0, 0, 0, 0, 0, 0, 0, 0};
    RowDots(act_w + row * H, x, n, H, vec8, acc);
    float acc_u[kMaxTile] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (gated) RowDots(a.up + row * H, x, n, H, vec8, acc_u);
#pragma unroll
    for (int i = 0; i < kMaxTile; ++i) {
      if (i >= n) break;
      const float s = WarpSum(acc[i]);
      const float su = gated ? WarpSum(acc_u[i]) : 0.0f;
      if (lane == 0) {
        z[i * d + j] = s + (act_b ? act_b[row] : 0.0f);
        if (gated) u[i * d + j] = su + (a.up_bias ? a.up_bias[row] : 0.0f);
      }
    }
  }
  __syncthreads();
  for (int i = warp; i < n; i += warps) {
    const int slot = begin + i;
    const int token = a.slot_token[slot];
    const float weight = a.slot_weight[slot];
    const float* v = z + i * d;
    float shift = 0.0f, inv = 1.0f;
    if (a.act == DeviceExpertAct::kNormSilu || a.act == DeviceExpertAct::kNormSiluNorms) shift = a.mean[token];
    if (a.act == DeviceExpertAct::kNormSilu || a.act == DeviceExpertAct::kNormSiluNoMean) {
      float sq = 0.0f;
      for (int j = lane; j < d; j += 32) sq += (v[j] - shift) * (v[j] - shift);
      inv = rsqrtf(WarpSum(sq) / d + a.eps);
    }
    float* h = a.hidden + static_cast<int64_t>(slot) * d;
    for (int j = lane; j < d; j += 32) {
      float r;
      switch (a.act) {
        case DeviceExpertAct::kNormSilu:
        case DeviceExpertAct::kNormSiluNoMean: r = Silu((v[j] - shift) * inv * a.gamma[j]); break;
        case DeviceExpertAct::kNormSiluNorms: r = Silu(v[j] - shift); break;
        case DeviceExpertAct::kSilu: r = Silu(v[j]); break;
        default: r = GeluErf(v[j]); break;
      }
      if (gated) r *= u[i * d + j];
      h[j] = r * weight;
    }
  }
}

__global__ void ExpertUpKernel(ExpertUpArgs a) {
  extern __shared__ float smem[];
  const int tiles = *a.num_tiles;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    ExpertUpTile(a, tile, smem);
    __syncthreads();  // the next tile reuses the shared memory
  }
}

__global__ void ExpertDownKernel(ExpertDownArgs a) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int r = blockIdx.x * kDownWarps + warp;
  if (r >= a.H) return;
  const int t0 = blockIdx.y * kDownTokenTile, t1 = min(a.T, t0 + kDownTokenTile);
  const bool vec2 = (a.d % 2) == 0;
  for (int t = t0; t < t1; ++t) {
    float acc = 0.0f;
    for (int i = a.token_begin[t]; i < a.token_begin[t + 1]; ++i) {
      const int e = a.entry_expert[i];
      const bf16* w = a.down + e * a.expert_stride + r * a.row_stride;
      const float* h = a.hidden + static_cast<int64_t>(a.entry_slot[i]) * a.d;
      if (vec2) {
        for (int j = lane; j < a.d / 2; j += 32) {
          const float2 wf = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162*>(w)[j]);
          const float2 hf = reinterpret_cast<const float2*>(h)[j];
          acc += wf.x * hf.x + wf.y * hf.y;
        }
      } else {
        for (int j = lane; j < a.d; j += 32) acc += __bfloat162float(w[j]) * h[j];
      }
    }
    acc = WarpSum(acc);
    if (lane == 0) {
      float bias = 0.0f;
      if (a.down_bias) {
        for (int i = a.token_begin[t]; i < a.token_begin[t + 1]; ++i) {
          bias += a.entry_weight[i] * a.down_bias[static_cast<int64_t>(a.entry_expert[i]) * a.H + r];
        }
      }
      a.y[static_cast<int64_t>(t) * a.H + r] += acc + bias;
    }
  }
}

// part[slot, r] = Σ_j down(e, r, j)·hidden[slot, j] for the slots of each tile.
__global__ void ExpertDownTileKernel(ExpertDownGroupedArgs a) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int r = blockIdx.y * kDownWarps + warp;
  if (r >= a.H) return;  // whole warps only: no block-level synchronisation below
  const int tiles = *a.num_tiles;
  const bool vec2 = (a.d % 2) == 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int e = a.tile_expert[tile], begin = a.tile_begin[tile], n = a.tile_count[tile];
    const bf16* w = a.down + e * a.expert_stride + r * a.row_stride;
    float acc[kMaxTile] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (vec2) {
      for (int j = lane; j < a.d / 2; j += 32) {
        const float2 wf = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162*>(w)[j]);
#pragma unroll
        for (int i = 0; i < kMaxTile; ++i) {
          if (i >= n) break;
          const float2 hf = reinterpret_cast<const float2*>(a.hidden + static_cast<int64_t>(begin + i) * a.d)[j];
          acc[i] += wf.x * hf.x + wf.y * hf.y;
        }
      }
    } else {
      for (int j = lane; j < a.d; j += 32) {
        const float wf = __bfloat162float(w[j]);
#pragma unroll
        for (int i = 0; i < kMaxTile; ++i) {
          if (i >= n) break;
          acc[i] += wf * a.hidden[static_cast<int64_t>(begin + i) * a.d + j];
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kMaxTile; ++i) {
      if (i >= n) break;
      const float s = WarpSum(acc[i]);
      if (lane == 0) a.part[static_cast<int64_t>(begin + i) * a.H + r] = s;
    }
  }
}

// y[t, r] += Σ_i part[slot_i, r] + Σ_i w_i·bias[e_i, r], over t's entries in ascending expert
// order (the bias sum separately and last, as the CPU's expert_executor.cc).
__global__ void ExpertDownCombineKernel(ExpertDownGroupedArgs a) {
  const int r = blockIdx.x * kCombineThreads + threadIdx.x, t = blockIdx.y;
  if (r >= a.H) return;
  const int b = a.token_begin[t], end = a.token_begin[t + 1];
  float acc = 0.0f;
  for (int i = b; i < end; ++i) acc += a.part[static_cast<int64_t>(a.entry_slot[i]) * a.H + r];
  float bias = 0.0f;
  if (a.down_bias) {
    for (int i = b; i < end; ++i) bias += a.entry_weight[i] * a.down_bias[static_cast<int64_t>(a.entry_expert[i]) * a.H + r];
  }
  a.y[static_cast<int64_t>(t) * a.H + r] += acc + bias;
}

}  // namespace

int ExpertUpMaxTile(int d, bool gated) {
  const int per_slot = (gated ? 2 : 1) * d * static_cast<int>(sizeof(float));
  const int tile = kSmemBudget / per_slot;
  return tile < kMaxTile ? tile : kMaxTile;
}

void LaunchExpertUp(const ExpertUpArgs& a, cudaStream_t stream) {
  if (a.max_tiles == 0) return;
  const size_t smem = static_cast<size_t>(a.gate ? 2 : 1) * a.max_tile * a.d * sizeof(float);
  ExpertUpKernel<<<a.max_tiles < kMaxUpBlocks ? a.max_tiles : kMaxUpBlocks, kUpThreads, smem, stream>>>(a);
}

void LaunchExpertDownGrouped(const ExpertDownGroupedArgs& a, cudaStream_t stream) {
  if (a.T == 0 || a.max_tiles == 0) return;
  const dim3 tiles_grid(a.max_tiles < kMaxDownTileBlocks ? a.max_tiles : kMaxDownTileBlocks,
                        (a.H + kDownWarps - 1) / kDownWarps);
  ExpertDownTileKernel<<<tiles_grid, kDownWarps * 32, 0, stream>>>(a);
  const dim3 combine_grid((a.H + kCombineThreads - 1) / kCombineThreads, a.T);
  ExpertDownCombineKernel<<<combine_grid, kCombineThreads, 0, stream>>>(a);
}

void LaunchExpertDown(const ExpertDownArgs& a, cudaStream_t stream) {
  if (a.T == 0) return;
  const dim3 grid((a.H + kDownWarps - 1) / kDownWarps, (a.T + kDownTokenTile - 1) / kDownTokenTile);
  ExpertDownKernel<<<grid, kDownWarps * 32, 0, stream>>>(a);
}

}  // namespace moeserve::cuda
