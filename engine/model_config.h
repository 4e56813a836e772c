// The architecture of a checkpoint, parsed from its config.json (DECO export family, spec
// deco.md §1.1). Parsing checks types, enums and refusals; shapes are checked against the
// tensors later by the model loader, which reports conflicts through `KeyedValue::Describe`.
#ifndef MOESERVE_ENGINE_MODEL_CONFIG_H_
#define MOESERVE_ENGINE_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/moe/moe_types.h"

namespace moeserve {

// An integer read from a Megatron key with an HF fallback; remembers where it came from so
// a conflict with the tensors can name both keys.
struct KeyedValue {
  int64_t value = 0;
  std::string key;       // the key that supplied `value` ("" = derived/default)
  std::string fallback;  // the other key of the pair and its value, if present
  std::string Describe() const;  // "num_query_groups=3 (HF key num_key_value_heads=2 ignored)"
};

struct ModelConfig {
  KeyedValue num_layers;
  KeyedValue hidden_size;
  KeyedValue num_heads;
  KeyedValue num_kv_groups;
  std::optional<KeyedValue> ffn_hidden_size;  // dense SwiGLU width
  int64_t head_dim = 0;                       // hidden_size / num_heads
  std::optional<int64_t> vocab_size_key;      // stale in exports; the embedding decides
  float norm_epsilon = 1e-5f;
  double rope_theta = 10000.0;
  int64_t max_position_embeddings = 4096;

  // MoE part; num_experts == 0 means a dense model.
  int64_t num_experts = 0;
  int64_t expert_width = 0;   // moe_ffn_hidden_size (d)
  int64_t shared_width = 0;   // moe_shared_expert_intermediate_size (S), 0 = none
  std::vector<bool> moe_layer;  // per layer, resolved from moe_layer_freq
  bool use_blockffn = false;
  RouterKind router = RouterKind::kDecoRelu;
  RouterNormType router_norm = RouterNormType::kSimple;
  bool router_norm_fixed = false;
  bool router_norm_scalar = false;
  float router_norm_init_var = 0.1f;
  ExpertAct expert_act = ExpertAct::kNormSilu;
  bool experts_gated = true;  // !expert_not_gated
  bool expert_bias = false;
  BiasApply bias_apply = BiasApply::kBase;
  int64_t topk = 2;
  double topp = 0.5;
  ScoreFunction score_function = ScoreFunction::kSoftmax;
  bool pre_softmax = false;
  std::optional<double> topk_scaling_factor;
  double clamp_act_ratio = 1.0;  // router_clamp_act_ratio extension (ReMoE)

  int64_t bos_token_id = 1;
  std::vector<int64_t> eos_token_ids = {2};

  // Warnings about stale HF keys that lost to Megatron keys.
  std::vector<std::string> warnings;

  bool IsMoeLayer(int64_t i) const { return num_experts > 0 && moe_layer[i]; }
};

// Parses config.json text. `label` (the path) prefixes every error.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text, const std::string& label);

// Reads and parses `dir`/config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_MODEL_CONFIG_H_
