// Grouping a layer's routing by expert on the device (engine/moe/expert_groups.cc + the tiling
// that cuda_forward.cc used to do on the host). From the router's dense [T, E] flags/weights:
//   1. RowCount   (block per token)  entries per token; slots per expert (integer atomics, so the
//                                    counts are exact whatever the order);
//   2. Offsets    (one block)        token_begin (CSR), expert_begin, each expert's first tile,
//                                    the tile count and the expert-union size;
//   3. Compact    (block per token)  the token's entries in ascending expert order;
//   4. Slots      (block per expert) the expert's slots in ascending token order, each entry's
//                                    slot, and the expert's tiles of ≤ max_tile slots.
// Every position is a prefix count, so the layout is exactly the host ExpertGroups' and does
// not depend on scheduling.
#include "engine/backend/cuda/kernels.h"

namespace moeserve::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kScanThreads = 1024;

__device__ __forceinline__ bool Evaluated(const GroupArgs& a, int64_t te) {
  return a.dense || (a.flags[te] & kRouted) != 0;
}

// Exclusive prefix sum of v over the block (blockDim.x a multiple of 32); *total gets the
// block's sum. `warp_sums` is 32 ints of shared memory. Synchronises the block.
__device__ int BlockExclusiveScan(int v, int* warp_sums, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  int incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int x = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += x;
  }
  __syncthreads();  // warp_sums may still be read by a previous call
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int w = lane < warps ? warp_sums[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int x = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += x;
    }
    if (lane < warps) warp_sums[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  *total = warp_sums[warps - 1];
  return (warp > 0 ? warp_sums[warp - 1] : 0) + incl - v;
}

__global__ void RowCountKernel(GroupArgs a) {
  const int t = blockIdx.x;
  __shared__ int count;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  int mine = 0;
  for (int e = threadIdx.x; e < a.E; e += blockDim.x) {
    if (Evaluated(a, static_cast<int64_t>(t) * a.E + e)) {
      ++mine;
      atomicAdd(&a.expert_count[e], 1);
    }
  }
  if (mine != 0) atomicAdd(&count, mine);
  __syncthreads();
  if (threadIdx.x == 0) a.row_count[t] = count;
}

// Exclusive scan of n values get(i) into out[0..n] (out[n] = total), in chunks of the block.
template <typename Get>
__device__ int ScanInto(int n, Get get, int32_t* out, int* warp_sums) {
  int carry = 0;
  for (int base = 0; base < n; base += blockDim.x) {
    const int i = base + threadIdx.x;
    const int v = i < n ? get(i) : 0;
    int total;
    const int x = BlockExclusiveScan(v, warp_sums, &total);
    if (i < n) out[i] = carry + x;
    carry += total;
  }
  if (threadIdx.x == 0) out[n] = carry;
  return carry;
}

__global__ void OffsetsKernel(GroupArgs a) {
  __shared__ int warp_sums[32];
  const int mt = a.max_tile;
  ScanInto(a.T, [&](int t) { return a.row_count[t]; }, a.token_begin, warp_sums);
  ScanInto(a.E, [&](int e) { return a.expert_count[e]; }, a.expert_begin, warp_sums);
  const int tiles = ScanInto(a.E, [&](int e) { return (a.expert_count[e] + mt - 1) / mt; }, a.tile_base, warp_sums);
  __syncthreads();
  int in_union = 0;
  for (int e = threadIdx.x; e < a.E; e += blockDim.x) in_union += a.expert_count[e] > 0 ? 1 : 0;
  int experts;
  BlockExclusiveScan(in_union, warp_sums, &experts);
  if (threadIdx.x == 0) {
    *a.num_tiles = tiles;
    *a.union_size = experts;
  }
}

__global__ void CompactKernel(GroupArgs a) {
  __shared__ int warp_sums[32];
  const int t = blockIdx.x;
  const int64_t row = static_cast<int64_t>(t) * a.E;
  int carry = a.token_begin[t];
  for (int base = 0; base < a.E; base += blockDim.x) {
    const int e = base + threadIdx.x;
    const bool on = e < a.E && Evaluated(a, row + e);
    int total;
    const int x = BlockExclusiveScan(on ? 1 : 0, warp_sums, &total);
    if (on) {
      const int i = carry + x;
      a.entry_expert[i] = e;
      a.entry_weight[i] = a.weight[row + e];
      a.entry_of[row + e] = i;
    }
    carry += total;
  }
}

__global__ void SlotsKernel(GroupArgs a) {
  __shared__ int warp_sums[32];
  const int e = blockIdx.x;
  int carry = a.expert_begin[e];
  for (int base = 0; base < a.T; base += blockDim.x) {
    const int t = base + threadIdx.x;
    const int64_t te = static_cast<int64_t>(t) * a.E + e;
    const bool on = t < a.T && Evaluated(a, te);
    int total;
    const int x = BlockExclusiveScan(on ? 1 : 0, warp_sums, &total);
    if (on) {
      const int slot = carry + x;
      a.slot_token[slot] = t;
      a.slot_weight[slot] = a.weight[te];
      a.entry_slot[a.entry_of[te]] = slot;
    }
    carry += total;
  }
  const int begin = a.expert_begin[e], n = a.expert_begin[e + 1] - begin;
  const int first = a.tile_base[e], tiles = a.tile_base[e + 1] - first;
  for (int j = threadIdx.x; j < tiles; j += blockDim.x) {
    a.tile_expert[first + j] = e;
    a.tile_begin[first + j] = begin + j * a.max_tile;
    a.tile_count[first + j] = min(a.max_tile, n - j * a.max_tile);
  }
}

}  // namespace

void LaunchGroupByExpert(const GroupArgs& a, cudaStream_t stream) {
  if (a.T == 0 || a.E == 0) return;
  cudaMemsetAsync(a.expert_count, 0, a.E * sizeof(int32_t), stream);
  RowCountKernel<<<a.T, kThreads, 0, stream>>>(a);
  OffsetsKernel<<<1, kScanThreads, 0, stream>>>(a);
  CompactKernel<<<a.T, kThreads, 0, stream>>>(a);
  SlotsKernel<<<a.E, kThreads, 0, stream>>>(a);
}

}  // namespace moeserve::cuda
