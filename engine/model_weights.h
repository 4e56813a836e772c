// All weights of a loaded model, laid out for the CPU backend: matrices in the compute dtype
// (mmapped when the checkpoint already has it, converted once otherwise), norms, biases and
// routers in fp32. Loading validates config.json against every tensor shape (spec deco.md §1,
// softmoe.md §7.2.2).
#ifndef MOESERVE_ENGINE_MODEL_WEIGHTS_H_
#define MOESERVE_ENGINE_MODEL_WEIGHTS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kernels/cpu/panel_pack.h"
#include "engine/kernels/cpu/weight_matrix.h"
#include "engine/dtype.h"
#include "engine/model_config.h"
#include "engine/moe/expert_bank.h"
#include "engine/moe/router.h"
#include "engine/tensor_store.h"

namespace moeserve {

// A dense FFN: SwiGLU down(silu(gate·m + b_g) ⊙ (up·m + b_u)) + b_d when gated, else exact
// GELU down(gelu(up·m + b_u)) + b_d (SoftMoE `expert_activation: gelu`). Biases are empty when
// absent (DECO never has them).
struct FfnWeights {
  WeightMatrix gate, up, down;  // [F, H], [F, H], [H, F]; gate empty for GELU
  std::vector<float> gate_bias, up_bias, down_bias;
  bool gated() const { return !gate.empty(); }
};
using SwiGluWeights = FfnWeights;

struct MoeLayerWeights {
  RouterSpec router_spec;
  std::unique_ptr<Router> router;
  WeightMatrix router_weight;  // fp32 [E, H]
  ExpertBank experts;
  std::optional<SwiGluWeights> shared;
};

struct LayerWeights {
  std::vector<float> input_norm, post_attention_norm;  // [H]
  std::vector<float> input_norm_bias, post_attention_norm_bias;  // [H], LayerNorm only
  WeightMatrix q, k, v, o;
  std::vector<float> q_bias, k_bias, v_bias, o_bias;  // empty when absent
  bool is_moe = false;
  SwiGluWeights dense;   // when !is_moe
  MoeLayerWeights moe;   // when is_moe
};

struct ModelWeights {
  ModelConfig config;
  DType compute_dtype = DType::kF32;
  int64_t vocab_size = 0;
  WeightMatrix embed;  // [V, H]
  WeightMatrix head;   // [V, H]; the embedding when tied
  bool tied_head = false;
  WeightMatrix pos_embed;  // [max_position_embeddings, H], learned absolute positions only
  std::vector<float> final_norm;
  std::vector<float> final_norm_bias;  // LayerNorm only
  std::vector<LayerWeights> layers;

  // Owned storage: converted matrices and the mapped checkpoint.
  std::vector<std::unique_ptr<unsigned char[]>> buffers;
  std::unique_ptr<TensorStore> store;
  // Matrices the CPU backend repacked for its kernels (backend/cpu/panel_weights.h).
  std::vector<PanelStorage> panel_storage;

  int64_t TotalParameters() const;
};

struct LoadOptions {
  DType compute_dtype = DType::kF32;
};

// Loads and validates `dir` (config.json + safetensors). Every error names the file and the
// key or tensor at fault.
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModelWeights(const std::string& dir, const LoadOptions& options);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_MODEL_WEIGHTS_H_
