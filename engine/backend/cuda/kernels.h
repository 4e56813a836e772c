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

#include "engine/moe/moe_types.h"

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
  const int32_t* num_tiles;    // [1] on the device (written by the grouping kernels)
  const int32_t* slot_token;   // [slots]
  const float* slot_weight;    // [slots] routing weight (score scaling, fused)
  float* hidden;               // [slots, d] out: weight · act(...) (⊙ up when gated)
  int H, d, max_tiles, max_tile;  // max_tiles: the launch's upper bound (MaxExpertTiles)
  float eps;
  DeviceExpertAct act;
};
// Largest tile that fits the shared-memory budget for width d (≥ 1; 0 if d is too wide).
int ExpertUpMaxTile(int d, bool gated);
void LaunchExpertUp(const ExpertUpArgs& a, cudaStream_t stream);

// Expert-major down projection (the CPU's expert_executor.cc grouping): per tile, each of the
// expert's output rows is read once and dotted with every slot of the tile, into
// part[slot, r]; then per token y[t, r] += Σ part[slot_i, r] over its entries in ascending
// expert order (+ Σ w_i·bias). A slot's dot never depends on the rest of its tile, and the
// per-token sum has a fixed order, so a token's result does not depend on the batch.
struct ExpertDownGroupedArgs {
  const bf16* down;  // as ExpertDownArgs
  int64_t expert_stride, row_stride;
  const float* down_bias;      // [E·H] or nullptr
  const int32_t* tile_expert;  // [tiles]
  const int32_t* tile_begin;
  const int32_t* tile_count;
  const int32_t* num_tiles;    // [1] device
  const float* hidden;         // [slots, d]
  float* part;                 // [slots, H] scratch
  const int32_t* token_begin;  // [T+1]
  const int32_t* entry_expert;
  const int32_t* entry_slot;
  const float* entry_weight;
  float* y;                    // [T, H] accumulated into
  int T, H, d, max_tiles, max_tile;
};
void LaunchExpertDownGrouped(const ExpertDownGroupedArgs& a, cudaStream_t stream);

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

// --- router_kernels.cu (compiled without fast math, see CMakeLists.txt) ----------------------
// Every router family of engine/moe/*_router.cc for T tokens, one block per token, with the
// token's ExpertBudget; the same float/double expression order as the host routers (serial
// sums in ascending expert order), so results differ from the CPU only where exp/log differ
// by an ulp at a routing boundary.
constexpr int kMaxDeviceExperts = 1024;  // shared-memory bound; larger routes on the host

// Routing of one token in dense form: flags[t·E + e] bit 0 = evaluated (an entry of the
// reference Routing), bit 1 = active; weight[t·E + e] its combination weight (0 otherwise).
constexpr uint8_t kRouted = 1, kActive = 2;

struct RouterArgs {
  RouterKind kind = RouterKind::kDecoRelu;
  int E = 0, T = 0;
  // DECO: router norm, its weights (size 1 or E), ε; expert bias (gates only) or nullptr.
  RouterNormType norm = RouterNormType::kSimple;
  const float* norm_weight = nullptr;
  int norm_weight_size = 1;
  float epsilon = 1e-5f;
  const float* expert_bias = nullptr;
  bool bias_rms = false;
  // Top-k.
  int topk = 2;
  bool softmax = true, pre_softmax = false;
  float scale = 1.0f;
  // ReMoE: keep the remoe_keep largest positives (−1 = no clamp).
  int remoe_keep = -1;
  // TopP.
  double topp = 0.5;
  // LapSum (RouterSpec's fields).
  double lapsum_k = 1.0, alpha = 1.0, threshold_coeff = 1.8, cap_coeff = 2.0;
  int lapsum_cap = 1;
  float lapsum_theta0 = 0.0f;
  // Inputs: fp32 logits [T, E] and the per-token budget [T].
  const float* logits = nullptr;
  const float* min_weight = nullptr;
  const float* k_scale = nullptr;
  const int32_t* max_experts = nullptr;
  // Outputs.
  uint8_t* flags = nullptr;     // [T, E]
  float* weight = nullptr;      // [T, E]
  int32_t* num_active = nullptr;  // [T] |A|
};
void LaunchRoute(const RouterArgs& a, cudaStream_t stream);

// --- expert_grouping.cu ----------------------------------------------------------------------
// The host's ExpertGroups::Build + tiling on the device, from a layer's dense routing: the
// evaluated entries (bit kRouted, or every expert when `dense`) in CSR order by token
// (ascending experts), then counting-sorted by expert (ascending tokens) into slots, cut into
// tiles of ≤ max_tile slots, and the expert-union size. Four kernels and a memset, no host
// involvement; every output buffer is sized for the worst case (T·E entries).
struct GroupArgs {
  int T = 0, E = 0, max_tile = 1;
  bool dense = false;
  const uint8_t* flags = nullptr;  // [T, E]
  const float* weight = nullptr;   // [T, E]
  int32_t* row_count = nullptr;      // [T] scratch
  int32_t* token_begin = nullptr;    // [T + 1]
  int32_t* entry_expert = nullptr;   // [T·E]
  float* entry_weight = nullptr;     // [T·E]
  int32_t* entry_slot = nullptr;     // [T·E]
  int32_t* entry_of = nullptr;       // [T·E] (t, e) -> entry, scratch
  int32_t* expert_count = nullptr;   // [E] scratch
  int32_t* expert_begin = nullptr;   // [E + 1]
  int32_t* tile_base = nullptr;      // [E + 1] first tile of each expert
  int32_t* slot_token = nullptr;     // [T·E]
  float* slot_weight = nullptr;      // [T·E]
  int32_t* tile_expert = nullptr;    // [MaxExpertTiles]
  int32_t* tile_begin = nullptr;
  int32_t* tile_count = nullptr;
  int32_t* num_tiles = nullptr;      // [1]
  int32_t* union_size = nullptr;     // [1] experts with ≥ 1 slot
};
// Upper bound of the tiles of T tokens over E experts: each expert has ≤ T slots.
inline int64_t MaxExpertTiles(int64_t T, int64_t E, int max_tile) {
  return E * ((T + max_tile - 1) / max_tile);
}
void LaunchGroupByExpert(const GroupArgs& a, cudaStream_t stream);

}  // namespace moeserve::cuda

#endif  // MOESERVE_ENGINE_BACKEND_CUDA_KERNELS_H_
