// Launchers of the CUDA backend's kernels (one .cu file per family). Plain host functions over
// raw device pointers, enqueued on `stream`; none allocates or synchronises. Shapes are
// row-major; "bf16" is __nv_bfloat16. Conventions shared by every launcher:
//   T      tokens of the step, in batch order;
//   rows   per-token row index arrays are int32 device arrays;
//   KV     the paged cache of one layer: [num_blocks][block_size][n_g][h_d] bf16, keys and values
//          in separate arrays (engine/kv_cache.h semantics, bf16 instead of f32);
//   tables token t's block table is tables[table_begin[t] ...], its position positions[t].
#ifndef MOESERVE_ENGINE_BACKEND_CUDA_KERNELS_H_
#define MOESERVE_ENGINE_BACKEND_CUDA_KERNELS_H_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace moeserve::cuda {

using bf16 = __nv_bfloat16;

// --- norm_kernels.cu -------------------------------------------------------------------------
// x[t, :] = embed[tokens[t], :] (+ pos_embed[positions[t], :] when pos_embed != nullptr).
void LaunchEmbed(const bf16* embed, const bf16* pos_embed, const int32_t* tokens, const int32_t* positions,
                 int T, int H, float* x, cudaStream_t stream);

// For r < R, source row s = (rows ? rows[r] : r): RMSNorm (bias == nullptr) or LayerNorm (biased
// variance, + bias) of x[s, :H] with weight w, statistics in fp32. Writes y32[r] (if non-null)
// and y16[r] (bf16, if non-null).
void LaunchNorm(const float* x, const int32_t* rows, int R, int H, const float* w, const float* bias, float eps,
                float* y32, bf16* y16, cudaStream_t stream);

// y[t, :N] += bias for t < T (row stride N).
void LaunchAddBias(float* y, const float* bias, int T, int N, cudaStream_t stream);

// out[i] = bf16(silu(gate[i]) * up[i]) (gate != nullptr), else bf16(gelu_erf(up[i])), i < n.
void LaunchGatedAct(const float* gate, const float* up, int64_t n, bf16* out, cudaStream_t stream);

// --- rope_kernels.cu -------------------------------------------------------------------------
// Rotate-half RoPE in place on q [T, nh, hd] and k [T, ng, hd]; cos/sin tables [max_pos, hd/2].
void LaunchRope(float* q, float* k, const float* cos, const float* sin, const int32_t* positions, int T, int nh,
                int ng, int hd, cudaStream_t stream);

// --- attention_kernels.cu --------------------------------------------------------------------
struct PagedKv {
  bf16* keys;    // this layer's [num_blocks][block_size][ng][hd]
  bf16* values;
  int block_size;
  int num_kv_heads;
  int head_dim;
};
struct TokenPlacementView {
  const int32_t* positions;    // [T]
  const int32_t* table_begin;  // [T] offset of the token's block table in `tables`
  const int32_t* tables;
};

// Writes k, v ([T, ng·hd] f32, already rotated) into the tokens' cache slots as bf16.
void LaunchKvStore(const float* k, const float* v, PagedKv kv, TokenPlacementView place, int T,
                   cudaStream_t stream);

// out[t, head] = softmax(q·Kᵀ/√hd) V over positions [0, positions[t]] of token t's sequence
// (causal; prefill and decode alike); query head j uses KV head j / (nh / ng). q [T, nh·hd] f32,
// out bf16. hd ≤ 256. Online softmax in fp32 over chunks of positions.
void LaunchPagedAttention(const float* q, PagedKv kv, TokenPlacementView place, int T, int nh, bf16* out,
                          cudaStream_t stream);

// --- expert_kernels.cu -----------------------------------------------------------------------
// The routed experts of one layer. Entries (token, expert) are grouped by expert ("slots");
// a tile is up to `max_tile` consecutive slots of one expert.
enum class DeviceExpertAct : int { kNormSilu, kNormSiluNoMean, kNormSiluNorms, kSilu, kGelu };

struct ExpertUpArgs {
  const bf16* up;          // [E·d, H]
  const bf16* gate;        // [E·d, H] or nullptr (not gated)
  const float* up_bias;    // [E·d] or nullptr
  const float* gate_bias;  // [E·d] or nullptr
  const float* gamma;      // [d] NormSilu weight (norm_silu, norm_silu_nomean)
  const float* mean;       // [T] per-token mean of the activation input (norm_silu, norm_silu_norms)
  const float* m;          // [T, H] normed MoE input, f32
  const int32_t* tile_expert;  // [tiles]
  const int32_t* tile_begin;   // [tiles] first slot
  const int32_t* tile_count;   // [tiles] ≤ max_tile
  const int32_t* slot_token;   // [slots]
  const float* slot_weight;    // [slots] routing weight (score scaling, fused)
  float* hidden;               // [slots, d] out: weight · act(...) (⊙ up when gated)
  int H, d, num_tiles, max_tile;
  float eps;
  DeviceExpertAct act;
};
// Largest tile that fits the shared-memory budget for width d (≥ 1; 0 if d is too wide).
int ExpertUpMaxTile(int d, bool gated);
void LaunchExpertUp(const ExpertUpArgs& a, cudaStream_t stream);

struct ExpertDownArgs {
  const bf16* down;        // element (e, r, j) at e·expert_stride + r·row_stride + j
  int64_t expert_stride, row_stride;
  const float* down_bias;  // [E·H] or nullptr (scaled by the routing weight)
  const int32_t* token_begin;  // [T+1] CSR over routing entries (the token's experts, ascending)
  const int32_t* entry_expert; // [entries]
  const int32_t* entry_slot;   // [entries] row of `hidden`
  const float* entry_weight;   // [entries] (bias scaling only)
  const float* hidden;         // [slots, d]
  float* y;                    // [T, H] accumulated into
  int T, H, d;
};
// y[t, r] += Σ_{entries i of t} Σ_j down(e_i, r, j)·hidden[slot_i, j] (+ w_i·bias[e_i·H + r]),
// reading only the active experts' d-wide slices of each output row.
void LaunchExpertDown(const ExpertDownArgs& a, cudaStream_t stream);

}  // namespace moeserve::cuda

#endif  // MOESERVE_ENGINE_BACKEND_CUDA_KERNELS_H_
