// Embedding gather, RMSNorm/LayerNorm, bias add and the dense-FFN activations.
#include "engine/backend/cuda/kernels.h"
#include "engine/backend/cuda/reduce.cuh"

namespace moeserve::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void EmbedKernel(const bf16* embed, const bf16* pos_embed, const int32_t* tokens,
                            const int32_t* positions, int H, float* x) {
  const int t = blockIdx.x;
  const bf16* row = embed + static_cast<int64_t>(tokens[t]) * H;
  const bf16* pos = pos_embed ? pos_embed + static_cast<int64_t>(positions[t]) * H : nullptr;
  float* out = x + static_cast<int64_t>(t) * H;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    float v = __bfloat162float(row[i]);
    if (pos) v += __bfloat162float(pos[i]);
    out[i] = v;
  }
}

// One block per output row.
__global__ void NormKernel(const float* x, const int32_t* rows, int H, const float* w, const float* bias, float eps,
                           float* y32, bf16* y16) {
  __shared__ float scratch[32];
  const int r = blockIdx.x;
  const int s = rows ? rows[r] : r;
  const float* in = x + static_cast<int64_t>(s) * H;
  float mean = 0.0f;
  if (bias) {  // LayerNorm: centre first
    float sum = 0.0f;
    for (int i = threadIdx.x; i < H; i += blockDim.x) sum += in[i];
    mean = BlockSum(sum, scratch) / H;
  }
  float sq = 0.0f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const float c = in[i] - mean;
    sq += c * c;
  }
  const float inv = rsqrtf(BlockSum(sq, scratch) / H + eps);
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    float v = (in[i] - mean) * inv * w[i];
    if (bias) v += bias[i];
    if (y32) y32[static_cast<int64_t>(r) * H + i] = v;
    if (y16) y16[static_cast<int64_t>(r) * H + i] = __float2bfloat16(v);
  }
}

__global__ void AddBiasKernel(float* y, const float* bias, int64_t n, int N) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] += bias[i % N];
  }
}

__global__ void GatedActKernel(const float* gate, const float* up, int64_t n, bf16* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = gate ? Silu(gate[i]) * up[i] : GeluErf(up[i]);
    out[i] = __float2bfloat16(v);
  }
}

int GridFor(int64_t n) { return static_cast<int>(n / kThreads + 1 < 4096 ? n / kThreads + 1 : 4096); }

}  // namespace

void LaunchEmbed(const bf16* embed, const bf16* pos_embed, const int32_t* tokens, const int32_t* positions,
                 int T, int H, float* x, cudaStream_t stream) {
  if (T > 0) EmbedKernel<<<T, kThreads, 0, stream>>>(embed, pos_embed, tokens, positions, H, x);
}

void LaunchNorm(const float* x, const int32_t* rows, int R, int H, const float* w, const float* bias, float eps,
                float* y32, bf16* y16, cudaStream_t stream) {
  if (R > 0) NormKernel<<<R, kThreads, 0, stream>>>(x, rows, H, w, bias, eps, y32, y16);
}

void LaunchAddBias(float* y, const float* bias, int T, int N, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(T) * N;
  if (n > 0 && bias) AddBiasKernel<<<GridFor(n), kThreads, 0, stream>>>(y, bias, n, N);
}

void LaunchGatedAct(const float* gate, const float* up, int64_t n, bf16* out, cudaStream_t stream) {
  if (n > 0) GatedActKernel<<<GridFor(n), kThreads, 0, stream>>>(gate, up, n, out);
}

}  // namespace moeserve::cuda
