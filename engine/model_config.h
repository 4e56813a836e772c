// The architecture of a checkpoint, parsed from its config.json: the DECO export family (spec
// deco.md §1.1) or a SoftMoE server checkpoint (spec softmoe.md §7.2, `model_type: "softmoe"`).
// Parsing checks types, enums and refusals; shapes are checked against the tensors later by
// the model loader, which reports conflicts through `KeyedValue::Describe`.
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

enum class ModelFamily { kDeco, kSoftMoe };
enum class NormKind { kRms, kLayer };           // RMSNorm, or LayerNorm with bias
enum class PositionKind { kRope, kLearned };    // rotate-half RoPE, or learned absolute
enum class FfnAct { kSwiGlu, kGelu };           // dense FFNs (and SoftMoE experts)

struct ModelConfig {
  // Checkpoint family. The trunk options below default to DECO's trunk (RMSNorm, RoPE, SwiGLU
  // dense FFNs, no biases); only SoftMoE checkpoints select others.
  ModelFamily family = ModelFamily::kDeco;
  NormKind norm = NormKind::kRms;
  PositionKind positions = PositionKind::kRope;
  FfnAct ffn_act = FfnAct::kSwiGlu;
  bool qkv_bias = false;            // q/k/v have biases (add_qkv_bias or add_bias_linear)
  bool linear_bias = false;         // add_bias_linear: o, expert and dense up/gate/down biases
  bool tie_word_embeddings = false; // SoftMoE only (explicit key); DECO decides by lm_head


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

  // SoftMoE router (LapSum, spec softmoe.md §7.2.1). Per-layer lists are indexed by the MoE
  // ordinal j (0 … L_m − 1), not the layer index.
  double lapsum_scale = 1.0;     // moe_router_lapsum_scale, α
  double threshold_coeff = 1.8;  // moe_router_threshold_coeff, c
  double cap_coeff = 2.0;        // moe_router_cap_coeff, γ
  std::optional<std::vector<double>> router_k;    // moe_router_k_per_layer, expanded to L_m
  std::optional<double> router_budget;            // moe_router_budget, K
  std::optional<std::vector<double>> budget_eta;  // moe_router_budget_eta (config source of η)
  std::vector<double> moe_k;  // resolved k_l per MoE ordinal; set by the loader (ResolveSoftMoeK)

  int64_t bos_token_id = 1;
  std::vector<int64_t> eos_token_ids = {2};

  // Warnings about stale HF keys that lost to Megatron keys.
  std::vector<std::string> warnings;

  bool IsMoeLayer(int64_t i) const { return num_experts > 0 && moe_layer[i]; }
  int64_t NumMoeLayers() const;
};

// Parses config.json text. `label` (the path) prefixes every error.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text, const std::string& label);

// Reads and parses `dir`/config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

// Resolves SoftMoE's k_l per MoE layer in float64 (spec softmoe.md §7.2.1): η from exactly one
// of `moe_router_budget_eta` and the tensor `model.moe_budget.eta` (`eta_tensor`, with
// `eta_tensor_label` naming it and its file), K from `moe_router_budget`, k from
// `moe_router_k_per_layer`; every refusal rule of the spec. `label` is the config path.
absl::StatusOr<std::vector<double>> ResolveSoftMoeK(const ModelConfig& c,
                                                    const std::optional<std::vector<double>>& eta_tensor,
                                                    const std::string& label, const std::string& eta_tensor_label);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_MODEL_CONFIG_H_
