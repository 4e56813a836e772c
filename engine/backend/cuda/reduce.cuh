// Warp and block reductions shared by the kernels (device code only).
#ifndef MOESERVE_ENGINE_BACKEND_CUDA_REDUCE_CUH_
#define MOESERVE_ENGINE_BACKEND_CUDA_REDUCE_CUH_

namespace moeserve::cuda {

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result.
// `scratch` holds 32 floats of shared memory; the call synchronises the block.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = WarpSum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float s = lane < warps ? scratch[lane] : 0.0f;
  return WarpSum(s);
}

__device__ __forceinline__ float Silu(float x) { return x / (1.0f + __expf(-x)); }
__device__ __forceinline__ float GeluErf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

}  // namespace moeserve::cuda

#endif  // MOESERVE_ENGINE_BACKEND_CUDA_REDUCE_CUH_
