#include "engine/model_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace moeserve {
namespace {

using Json = nlohmann::json;

// Typed access to config keys; every error names the file and the key.
class ConfigReader {
 public:
  ConfigReader(const Json& j, std::string label) : j_(j), label_(std::move(label)) {}

  bool Has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }
  bool IsExplicitNull(const char* key) const { return j_.contains(key) && j_[key].is_null(); }

  absl::Status Error(const std::string& key, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": key \"", key, "\" ", what));
  }

  absl::StatusOr<std::optional<int64_t>> Int(const char* key) const {
    if (!Has(key)) return std::optional<int64_t>();
    const Json& v = j_[key];
    if (!v.is_number_integer()) return Error(key, absl::StrCat("must be an integer, got ", v.dump()));
    return std::optional<int64_t>(v.get<int64_t>());
  }
  absl::StatusOr<std::optional<double>> Number(const char* key) const {
    if (!Has(key)) return std::optional<double>();
    const Json& v = j_[key];
    if (!v.is_number()) return Error(key, absl::StrCat("must be a number, got ", v.dump()));
    const double d = v.get<double>();
    if (!std::isfinite(d)) return Error(key, "must be finite");
    return std::optional<double>(d);
  }
  absl::StatusOr<bool> Bool(const char* key, bool def) const {
    if (!Has(key)) return def;
    const Json& v = j_[key];
    if (!v.is_boolean()) return Error(key, absl::StrCat("must be true or false, got ", v.dump()));
    return v.get<bool>();
  }
  absl::StatusOr<std::string> String(const char* key, const std::string& def) const {
    if (!Has(key)) return def;
    const Json& v = j_[key];
    if (!v.is_string()) return Error(key, absl::StrCat("must be a string, got ", v.dump()));
    return v.get<std::string>();
  }

  // Megatron key wins; the HF key is a fallback. Positive integers only.
  absl::StatusOr<std::optional<KeyedValue>> Pair(const char* megatron, const char* hf,
                                                 std::vector<std::string>* warnings) const {
    ASSIGN_OR_RETURN(auto m, Int(megatron));
    std::optional<int64_t> h;
    if (hf != nullptr) {
      // A stale HF key of the wrong type is still a stale key: report it, don't die on it
      // unless it is the only source.
      auto parsed = Int(hf);
      if (parsed.ok()) {
        h = *parsed;
      } else if (!m) {
        return parsed.status();
      }
    }
    if (!m && !h) return std::optional<KeyedValue>();
    KeyedValue kv;
    if (m) {
      kv.value = *m;
      kv.key = megatron;
      if (h) {
        kv.fallback = absl::StrCat("HF key ", hf, "=", *h, *h == *m ? "" : " ignored");
        if (*h != *m) {
          warnings->push_back(absl::StrCat(label_, ": stale HF key ", hf, "=", *h, " disagrees with ",
                                           megatron, "=", *m, "; using ", megatron,
                                           " (Megatron keys win)"));
        }
      }
    } else {
      kv.value = *h;
      kv.key = hf;
      kv.fallback = absl::StrCat("Megatron key ", megatron, " absent");
    }
    if (kv.value <= 0) return Error(kv.key, absl::StrCat("must be positive, got ", kv.value));
    return std::optional<KeyedValue>(kv);
  }

  const std::string& label() const { return label_; }

 private:
  const Json& j_;
  std::string label_;
};

template <typename E>
absl::StatusOr<E> ParseEnum(const ConfigReader& r, const char* key, const std::string& def,
                            std::initializer_list<std::pair<const char*, E>> values) {
  // JSON null would silently mean "default"; for router_norm_type it could also be meant as
  // the string "null". Mode keys must be spelled out.
  if (r.IsExplicitNull(key)) return r.Error(key, "is JSON null; give the mode as a string");
  ASSIGN_OR_RETURN(std::string s, r.String(key, def));
  std::string allowed;
  for (const auto& [name, value] : values) {
    if (s == name) return value;
    absl::StrAppend(&allowed, allowed.empty() ? "" : ", ", name);
  }
  return r.Error(key, absl::StrCat("has unknown value \"", s, "\" (supported: ", allowed, ")"));
}

// moe_layer_freq: list of 0/1 per layer, or int N (layer i is MoE iff i % N == 0).
absl::Status ParseLayerFreq(const ConfigReader& r, const Json& j, ModelConfig& c) {
  const int64_t layers = c.num_layers.value;
  c.moe_layer.assign(layers, true);
  if (r.Has("moe_layer_freq")) {
    const Json& f = j["moe_layer_freq"];
    if (f.is_number_integer()) {
      const int64_t n = f.get<int64_t>();
      if (n < 1) return r.Error("moe_layer_freq", "must be >= 1");
      for (int64_t i = 0; i < layers; ++i) c.moe_layer[i] = (i % n == 0);
    } else if (f.is_array()) {
      if (static_cast<int64_t>(f.size()) != layers) {
        return r.Error("moe_layer_freq", absl::StrCat("has ", f.size(), " entries but ", c.num_layers.key,
                                                      "=", layers));
      }
      for (int64_t i = 0; i < layers; ++i) {
        if (!f[i].is_number_integer() || (f[i].get<int64_t>() != 0 && f[i].get<int64_t>() != 1)) {
          return r.Error("moe_layer_freq", absl::StrCat("entry ", i, " must be 0 or 1"));
        }
        c.moe_layer[i] = f[i].get<int64_t>() == 1;
      }
    } else {
      return r.Error("moe_layer_freq", "must be an integer or a list of 0/1");
    }
  }
  return absl::OkStatus();
}

absl::Status ParseMoe(const ConfigReader& r, const Json& j, ModelConfig& c) {
  ASSIGN_OR_RETURN(auto experts, r.Int("num_experts"));
  if (!experts) return absl::OkStatus();  // dense model
  if (*experts < 1) return r.Error("num_experts", "must be positive");
  c.num_experts = *experts;
  ASSIGN_OR_RETURN(auto width, r.Int("moe_ffn_hidden_size"));
  if (!width || *width < 1) return r.Error("moe_ffn_hidden_size", "must be a positive integer for an MoE model");
  c.expert_width = *width;
  ASSIGN_OR_RETURN(auto shared, r.Int("moe_shared_expert_intermediate_size"));
  if (shared && *shared < 0) return r.Error("moe_shared_expert_intermediate_size", "must be >= 0");
  c.shared_width = shared.value_or(0);

  RETURN_IF_ERROR(ParseLayerFreq(r, j, c));

  ASSIGN_OR_RETURN(c.use_blockffn, r.Bool("use_blockffn", false));
  if (c.use_blockffn) {
    c.router = RouterKind::kDecoRelu;  // router_type ("topk" in DECO exports) is ignored
  } else {
    ASSIGN_OR_RETURN(c.router, ParseEnum<RouterKind>(r, "router_type", "topk",
                                                     {{"topk", RouterKind::kTopK},
                                                      {"remoe", RouterKind::kReMoE},
                                                      {"topp", RouterKind::kTopP}}));
  }
  ASSIGN_OR_RETURN(std::string act_func, r.String("router_act_func", "relu"));
  if (act_func != "relu")
    return r.Error("router_act_func", absl::StrCat("has unknown value \"", act_func, "\" (supported: relu)"));
  ASSIGN_OR_RETURN(c.router_norm, ParseEnum<RouterNormType>(r, "router_norm_type", "simple",
                                                            {{"simple", RouterNormType::kSimple},
                                                             {"rms", RouterNormType::kRms},
                                                             {"normal", RouterNormType::kNormal},
                                                             {"null", RouterNormType::kNull}}));
  ASSIGN_OR_RETURN(c.router_norm_fixed, r.Bool("router_norm_fixed", false));
  ASSIGN_OR_RETURN(c.router_norm_scalar, r.Bool("router_norm_scalar", false));
  ASSIGN_OR_RETURN(auto init_var, r.Number("router_norm_init_var"));
  c.router_norm_init_var = static_cast<float>(init_var.value_or(0.1));
  ASSIGN_OR_RETURN(c.expert_act, ParseEnum<ExpertAct>(r, "expert_act_func", "norm_silu",
                                                      {{"norm_silu", ExpertAct::kNormSilu},
                                                       {"norm_silu_nomean", ExpertAct::kNormSiluNoMean},
                                                       {"norm_silu_norms", ExpertAct::kNormSiluNorms},
                                                       {"silu", ExpertAct::kSilu}}));
  ASSIGN_OR_RETURN(std::string act_norm, r.String("expert_act_norm_type", "normal"));
  if (act_norm != "normal") return r.Error("expert_act_norm_type", "must be \"normal\"");
  ASSIGN_OR_RETURN(bool not_gated, r.Bool("expert_not_gated", false));
  c.experts_gated = !not_gated;
  ASSIGN_OR_RETURN(c.expert_bias, r.Bool("moe_router_enable_expert_bias", false));
  ASSIGN_OR_RETURN(c.bias_apply, ParseEnum<BiasApply>(r, "moe_expert_bias_apply_method", "base",
                                                      {{"base", BiasApply::kBase}, {"rms", BiasApply::kRms}}));
  ASSIGN_OR_RETURN(auto topk, r.Int("moe_router_topk"));
  c.topk = topk.value_or(2);
  ASSIGN_OR_RETURN(auto topp, r.Number("moe_router_topp"));
  c.topp = topp.value_or(0.5);
  ASSIGN_OR_RETURN(c.score_function, ParseEnum<ScoreFunction>(r, "moe_router_score_function", "softmax",
                                                              {{"softmax", ScoreFunction::kSoftmax},
                                                               {"sigmoid", ScoreFunction::kSigmoid}}));
  ASSIGN_OR_RETURN(c.pre_softmax, r.Bool("moe_router_pre_softmax", false));
  ASSIGN_OR_RETURN(c.topk_scaling_factor, r.Number("moe_router_topk_scaling_factor"));
  ASSIGN_OR_RETURN(auto clamp, r.Number("router_clamp_act_ratio"));
  c.clamp_act_ratio = clamp.value_or(1.0);

  if (c.router == RouterKind::kTopK) {
    if (c.topk < 1 || c.topk > c.num_experts) {
      return r.Error("moe_router_topk", absl::StrCat("must be in [1, num_experts=", c.num_experts, "], got ", c.topk));
    }
    if (c.expert_bias && c.score_function == ScoreFunction::kSoftmax && !c.pre_softmax) {
      return r.Error("moe_router_enable_expert_bias", "is invalid with post-softmax top-k routing");
    }
  }
  if (c.router == RouterKind::kTopP && !(c.topp > 0.0 && c.topp <= 1.0)) {
    return r.Error("moe_router_topp", "must be in (0, 1]");
  }
  if (c.clamp_act_ratio <= 0.0) return r.Error("router_clamp_act_ratio", "must be > 0");
  return absl::OkStatus();
}

// ---- SoftMoE (spec softmoe.md §7.2.1): every key typed strictly; null = absent.

absl::StatusOr<int64_t> RequiredInt(const ConfigReader& r, const char* key, int64_t min) {
  ASSIGN_OR_RETURN(auto v, r.Int(key));
  if (!v) return r.Error(key, "is missing");
  if (*v < min) return r.Error(key, absl::StrCat("must be >= ", min, ", got ", *v));
  return *v;
}

// A required string enum; `null` counts as absent.
template <typename E>
absl::StatusOr<E> RequiredEnum(const ConfigReader& r, const char* key,
                               std::initializer_list<std::pair<const char*, E>> values) {
  std::string allowed;
  for (const auto& [name, value] : values) absl::StrAppend(&allowed, allowed.empty() ? "" : ", ", "\"", name, "\"");
  if (!r.Has(key)) return r.Error(key, absl::StrCat("is missing (one of ", allowed, ")"));
  ASSIGN_OR_RETURN(std::string s, r.String(key, ""));
  for (const auto& [name, value] : values) {
    if (s == name) return value;
  }
  return r.Error(key, absl::StrCat("has unknown value \"", s, "\" (supported: ", allowed, ")"));
}

// A number (JSON integer or float, not a bool), finite.
absl::StatusOr<double> NumberValue(const ConfigReader& r, const char* key, const Json& v, const std::string& where) {
  if (!v.is_number()) return r.Error(key, absl::StrCat(where, "must be a number, got ", v.dump()));
  const double d = v.get<double>();
  if (!std::isfinite(d)) return r.Error(key, absl::StrCat(where, "must be finite"));
  return d;
}

absl::StatusOr<std::optional<std::vector<double>>> NumberList(const ConfigReader& r, const Json& j, const char* key,
                                                              int64_t expected_size, const char* size_what) {
  if (!r.Has(key)) return std::optional<std::vector<double>>();
  const Json& v = j[key];
  if (!v.is_array()) return r.Error(key, absl::StrCat("must be a list of numbers, got ", v.dump()));
  std::vector<double> out;
  for (size_t i = 0; i < v.size(); ++i) {
    ASSIGN_OR_RETURN(double d, NumberValue(r, key, v[i], absl::StrCat("entry ", i, " ")));
    out.push_back(d);
  }
  if (static_cast<int64_t>(out.size()) != expected_size) {
    return r.Error(key, absl::StrCat("has ", out.size(), " entries; it needs one per MoE layer (", size_what, "=",
                                     expected_size, ")"));
  }
  return std::optional<std::vector<double>>(std::move(out));
}

absl::Status ParseSoftMoe(const ConfigReader& r, const Json& j, ModelConfig& c) {
  c.family = ModelFamily::kSoftMoe;
  if (!r.Has("architectures")) return r.Error("architectures", "is missing (must contain \"SoftMoEForCausalLM\")");
  {
    const Json& a = j["architectures"];
    if (!a.is_array()) return r.Error("architectures", absl::StrCat("must be a list of strings, got ", a.dump()));
    bool found = false;
    for (const Json& v : a) {
      if (!v.is_string()) return r.Error("architectures", absl::StrCat("must hold strings, got ", v.dump()));
      found |= v.get<std::string>() == "SoftMoEForCausalLM";
    }
    if (!found) return r.Error("architectures", "must contain \"SoftMoEForCausalLM\"");
  }
  if (!r.Has("model_type")) return r.Error("model_type", "is missing (must be \"softmoe\")");
  ASSIGN_OR_RETURN(std::string model_type, r.String("model_type", ""));
  if (model_type != "softmoe")
    return r.Error("model_type", absl::StrCat("must be \"softmoe\", got \"", model_type, "\""));

  auto keyed = [](int64_t v, const char* key) { return KeyedValue{v, key, ""}; };
  ASSIGN_OR_RETURN(int64_t H, RequiredInt(r, "hidden_size", 1));
  ASSIGN_OR_RETURN(int64_t L, RequiredInt(r, "num_layers", 1));
  if (L > (int64_t{1} << 16))
    return r.Error("num_layers", absl::StrCat("=", L, " exceeds this engine's limit of 65536"));
  ASSIGN_OR_RETURN(int64_t n_h, RequiredInt(r, "num_attention_heads", 1));
  ASSIGN_OR_RETURN(auto n_g, r.Int("num_query_groups"));
  if (n_g && *n_g < 1) return r.Error("num_query_groups", absl::StrCat("must be >= 1, got ", *n_g));
  c.hidden_size = keyed(H, "hidden_size");
  c.num_layers = keyed(L, "num_layers");
  c.num_heads = keyed(n_h, "num_attention_heads");
  c.num_kv_groups = n_g ? keyed(*n_g, "num_query_groups") : KeyedValue{n_h, "", "defaults to num_attention_heads"};
  if (H % n_h != 0) {
    return r.Error("num_attention_heads", absl::StrCat("=", n_h, " does not divide hidden_size=", H));
  }
  c.head_dim = H / n_h;
  if (n_h % c.num_kv_groups.value != 0) {
    return r.Error("num_query_groups",
                   absl::StrCat("=", c.num_kv_groups.value, " does not divide num_attention_heads=", n_h));
  }
  ASSIGN_OR_RETURN(int64_t V, RequiredInt(r, "vocab_size", 1));
  c.vocab_size_key = V;
  ASSIGN_OR_RETURN(c.max_position_embeddings, RequiredInt(r, "max_position_embeddings", 1));

  ASSIGN_OR_RETURN(c.norm, RequiredEnum<NormKind>(r, "norm_type", {{"rmsnorm", NormKind::kRms},
                                                                   {"layernorm", NormKind::kLayer}}));
  ASSIGN_OR_RETURN(auto eps, r.Number("norm_epsilon"));
  if (eps && !(*eps > 0)) return r.Error("norm_epsilon", absl::StrCat("must be > 0, got ", *eps));
  c.norm_epsilon = static_cast<float>(eps.value_or(1e-5));
  ASSIGN_OR_RETURN(c.positions, RequiredEnum<PositionKind>(r, "position_embedding_type",
                                                           {{"rope", PositionKind::kRope},
                                                            {"learned_absolute", PositionKind::kLearned}}));
  if (c.positions == PositionKind::kRope) {  // rotary_base is read only for rope
    ASSIGN_OR_RETURN(auto base, r.Number("rotary_base"));
    if (base && !(*base > 0)) return r.Error("rotary_base", absl::StrCat("must be > 0, got ", *base));
    c.rope_theta = base.value_or(10000.0);
    if (c.head_dim % 2 != 0) {
      return r.Error("position_embedding_type",
                     absl::StrCat("is \"rope\" but the head dim hidden_size/num_attention_heads=", c.head_dim,
                                   " is odd; rotate-half RoPE needs an even one"));
    }
  }
  ASSIGN_OR_RETURN(bool add_qkv_bias, r.Bool("add_qkv_bias", false));
  ASSIGN_OR_RETURN(c.linear_bias, r.Bool("add_bias_linear", false));
  c.qkv_bias = add_qkv_bias || c.linear_bias;
  ASSIGN_OR_RETURN(c.tie_word_embeddings, r.Bool("tie_word_embeddings", false));

  ASSIGN_OR_RETURN(c.num_experts, RequiredInt(r, "num_experts", 2));
  ASSIGN_OR_RETURN(c.expert_width, RequiredInt(r, "moe_ffn_hidden_size", 1));
  ASSIGN_OR_RETURN(c.ffn_act, RequiredEnum<FfnAct>(r, "expert_activation", {{"gelu", FfnAct::kGelu},
                                                                             {"swiglu", FfnAct::kSwiGlu}}));
  c.experts_gated = c.ffn_act == FfnAct::kSwiGlu;
  c.expert_act = c.ffn_act == FfnAct::kGelu ? ExpertAct::kGelu : ExpertAct::kSilu;
  c.router = RouterKind::kLapSum;
  c.use_blockffn = false;
  c.shared_width = 0;
  RETURN_IF_ERROR(ParseLayerFreq(r, j, c));
  const int64_t moe_layers = c.NumMoeLayers();
  if (moe_layers == 0) return r.Error("moe_layer_freq", "makes no layer an MoE layer; at least one is required");
  ASSIGN_OR_RETURN(auto ffn, r.Int("ffn_hidden_size"));
  if (ffn && *ffn < 1) return r.Error("ffn_hidden_size", absl::StrCat("must be >= 1, got ", *ffn));
  if (ffn) c.ffn_hidden_size = keyed(*ffn, "ffn_hidden_size");
  if (!ffn && moe_layers < L) {
    for (int64_t i = 0; i < L; ++i) {
      if (!c.moe_layer[i]) {
        return r.Error("ffn_hidden_size", absl::StrCat("is missing but layer ", i, " is dense (moe_layer_freq)"));
      }
    }
  }

  ASSIGN_OR_RETURN(auto alpha, r.Number("moe_router_lapsum_scale"));
  if (alpha && !(*alpha > 0)) return r.Error("moe_router_lapsum_scale", absl::StrCat("must be > 0, got ", *alpha));
  c.lapsum_scale = alpha.value_or(1.0);
  ASSIGN_OR_RETURN(auto thr, r.Number("moe_router_threshold_coeff"));
  if (thr && !(*thr >= 0)) return r.Error("moe_router_threshold_coeff", absl::StrCat("must be >= 0, got ", *thr));
  c.threshold_coeff = thr.value_or(1.8);
  ASSIGN_OR_RETURN(auto cap, r.Number("moe_router_cap_coeff"));
  if (cap && !(*cap > 0)) return r.Error("moe_router_cap_coeff", absl::StrCat("must be > 0, got ", *cap));
  c.cap_coeff = cap.value_or(2.0);

  if (r.Has("moe_router_k_per_layer")) {
    const Json& k = j["moe_router_k_per_layer"];
    if (k.is_array()) {
      ASSIGN_OR_RETURN(c.router_k, NumberList(r, j, "moe_router_k_per_layer", moe_layers, "MoE layers"));
    } else {
      ASSIGN_OR_RETURN(double v, NumberValue(r, "moe_router_k_per_layer", k, ""));
      c.router_k = std::vector<double>(moe_layers, v);
    }
  }
  ASSIGN_OR_RETURN(c.router_budget, r.Number("moe_router_budget"));
  ASSIGN_OR_RETURN(c.budget_eta, NumberList(r, j, "moe_router_budget_eta", moe_layers, "MoE layers"));

  // No key for them in the contract: BOS 1 (used only for warm-up) and no EOS token.
  c.bos_token_id = 1;
  c.eos_token_ids.clear();
  return absl::OkStatus();
}

bool IsSoftMoe(const Json& j) {
  if (j.contains("model_type") && j["model_type"].is_string() && j["model_type"] == "softmoe") return true;
  if (j.contains("architectures") && j["architectures"].is_array()) {
    for (const Json& a : j["architectures"]) {
      if (a.is_string() && a.get<std::string>() == "SoftMoEForCausalLM") return true;
    }
  }
  return false;
}

}  // namespace

int64_t ModelConfig::NumMoeLayers() const {
  int64_t n = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(moe_layer.size()); ++i) n += IsMoeLayer(i);
  return n;
}

absl::StatusOr<std::vector<double>> ResolveSoftMoeK(const ModelConfig& c,
                                                    const std::optional<std::vector<double>>& eta_tensor,
                                                    const std::string& label, const std::string& eta_tensor_label) {
  auto error = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": ", what));
  };
  const int64_t Lm = c.NumMoeLayers();
  const int64_t n = c.num_experts;
  if (c.budget_eta && eta_tensor) {
    return error(absl::StrCat("η is given twice: key \"moe_router_budget_eta\" and tensor ", eta_tensor_label,
                              "; give exactly one"));
  }
  const std::optional<std::vector<double>>& eta = c.budget_eta ? c.budget_eta : eta_tensor;
  const std::string eta_source =
      c.budget_eta ? std::string("key \"moe_router_budget_eta\"") : absl::StrCat("tensor ", eta_tensor_label);
  if (eta && !c.router_budget) {
    return error(absl::StrCat("key \"moe_router_budget\" is missing but η is given by ", eta_source,
                              "; K and η go together"));
  }
  if (!eta && c.router_budget) {
    return error(
        "key \"moe_router_budget\" is given without η (key \"moe_router_budget_eta\" or tensor "
        "\"model.moe_budget.eta\"); K and η go together");
  }
  std::vector<double> k_eta;
  if (eta) {
    if (static_cast<int64_t>(eta->size()) != Lm) {
      return error(absl::StrCat(eta_source, " holds ", eta->size(), " values; it needs one per MoE layer (", Lm, ")"));
    }
    for (size_t j = 0; j < eta->size(); ++j) {
      if (!std::isfinite((*eta)[j])) return error(absl::StrCat(eta_source, " value ", j, " is not finite"));
    }
    const double K = *c.router_budget;
    if (!(K >= static_cast<double>(Lm))) {
      return error(absl::StrCat("key \"moe_router_budget\"=", K, " must be >= the number of MoE layers (", Lm, ")"));
    }
    // k_l = 1 + (K − L_m)·softmax(η)_l, softmax in float64 with max subtraction.
    double mx = (*eta)[0];
    for (double v : *eta) mx = std::max(mx, v);
    double sum = 0;
    for (double v : *eta) sum += std::exp(v - mx);
    for (double v : *eta) k_eta.push_back(1.0 + (K - static_cast<double>(Lm)) * (std::exp(v - mx) / sum));
  }
  std::vector<double> k;
  if (c.router_k) {
    k = *c.router_k;
    if (eta) {
      for (int64_t j = 0; j < Lm; ++j) {
        if (!(std::fabs(k[j] - k_eta[j]) <= 1e-4)) {
          return error(absl::StrCat("key \"moe_router_k_per_layer\" entry ", j, " = ", k[j],
                                    " disagrees with the k from η (", eta_source, ") and moe_router_budget: ",
                                    k_eta[j], " (allowed difference 1e-4)"));
        }
      }
    }
  } else if (eta) {
    k = k_eta;
  } else {
    return error(
        "no per-layer k: give key \"moe_router_k_per_layer\", or η (key \"moe_router_budget_eta\" or tensor "
        "\"model.moe_budget.eta\") with key \"moe_router_budget\"");
  }
  for (int64_t j = 0; j < Lm; ++j) {
    if (!(k[j] > 0.0 && k[j] < static_cast<double>(n))) {
      return error(absl::StrCat("k of MoE layer ", j, " (from ", c.router_k ? "moe_router_k_per_layer" : eta_source,
                                ") is ", k[j], "; it must satisfy 0 < k < num_experts=", n));
    }
  }
  return k;
}

std::string KeyedValue::Describe() const {
  std::string s = absl::StrCat(key.empty() ? "(derived)" : key, "=", value);
  if (!fallback.empty()) absl::StrAppend(&s, " (", fallback, ")");
  return s;
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& text, const std::string& label) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(label, ": not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(label, ": not a JSON object"));
  ConfigReader r(j, label);
  ModelConfig c;

  if (IsSoftMoe(j)) {  // spec softmoe.md §7.2: its own strict key set
    RETURN_IF_ERROR(ParseSoftMoe(r, j, c));
    return c;
  }
  ASSIGN_OR_RETURN(bool mup, r.Bool("use_mup", false));
  if (mup) {
    return r.Error("use_mup", "is true: the muP factors (mup_emb_scale, mup_depth_scale, "
                              "mup_base_hidden_size) are not exported, so the model cannot be reproduced");
  }
  if (r.Has("rope_scaling"))
    return r.Error("rope_scaling", absl::StrCat("must be null, got ", j["rope_scaling"].dump()));

  auto require = [&](std::optional<KeyedValue> v, const char* what) -> absl::StatusOr<KeyedValue> {
    if (!v) return r.Error(what, "is missing");
    return *v;
  };
  ASSIGN_OR_RETURN(auto layers, r.Pair("num_layers", "num_hidden_layers", &c.warnings));
  ASSIGN_OR_RETURN(c.num_layers, require(layers, "num_layers"));
  ASSIGN_OR_RETURN(auto hidden, r.Pair("hidden_size", nullptr, &c.warnings));
  ASSIGN_OR_RETURN(c.hidden_size, require(hidden, "hidden_size"));
  ASSIGN_OR_RETURN(auto heads, r.Pair("num_attention_heads", nullptr, &c.warnings));
  ASSIGN_OR_RETURN(c.num_heads, require(heads, "num_attention_heads"));
  ASSIGN_OR_RETURN(auto groups, r.Pair("num_query_groups", "num_key_value_heads", &c.warnings));
  c.num_kv_groups = groups.value_or(KeyedValue{c.num_heads.value, "", "defaults to num_attention_heads"});
  ASSIGN_OR_RETURN(c.ffn_hidden_size, r.Pair("ffn_hidden_size", "intermediate_size", &c.warnings));

  if (c.hidden_size.value % c.num_heads.value != 0) {
    return r.Error("num_attention_heads", absl::StrCat("=", c.num_heads.value, " does not divide hidden_size=",
                                                       c.hidden_size.value));
  }
  c.head_dim = c.hidden_size.value / c.num_heads.value;
  if (c.head_dim % 2 != 0) return r.Error("num_attention_heads", "gives an odd head dim; RoPE needs an even one");
  if (c.num_heads.value % c.num_kv_groups.value != 0) {
    return r.Error(
        c.num_kv_groups.key.empty() ? "num_query_groups" : c.num_kv_groups.key,
        absl::StrCat("=", c.num_kv_groups.value, " does not divide num_attention_heads=", c.num_heads.value));
  }
  ASSIGN_OR_RETURN(c.vocab_size_key, r.Int("vocab_size"));

  ASSIGN_OR_RETURN(auto eps, r.Number("norm_epsilon"));
  if (!eps) { ASSIGN_OR_RETURN(eps, r.Number("rms_norm_eps")); }
  c.norm_epsilon = static_cast<float>(eps.value_or(1e-5));
  if (!(c.norm_epsilon > 0)) return r.Error("norm_epsilon", "must be > 0");
  ASSIGN_OR_RETURN(auto theta, r.Number("rope_theta"));
  if (!theta) { ASSIGN_OR_RETURN(theta, r.Number("rotary_base")); }
  c.rope_theta = theta.value_or(10000.0);
  if (!(c.rope_theta > 0)) return r.Error("rope_theta", "must be > 0");
  ASSIGN_OR_RETURN(auto max_pos, r.Int("max_position_embeddings"));
  c.max_position_embeddings = max_pos.value_or(4096);
  if (c.max_position_embeddings < 1) return r.Error("max_position_embeddings", "must be positive");

  ASSIGN_OR_RETURN(auto bos, r.Int("bos_token_id"));
  c.bos_token_id = bos.value_or(1);
  if (r.Has("eos_token_id")) {
    const Json& e = j["eos_token_id"];
    c.eos_token_ids.clear();
    if (e.is_number_integer()) {
      c.eos_token_ids.push_back(e.get<int64_t>());
    } else if (e.is_array()) {
      for (const auto& v : e) {
        if (!v.is_number_integer()) return r.Error("eos_token_id", "must hold integers");
        c.eos_token_ids.push_back(v.get<int64_t>());
      }
    } else {
      return r.Error("eos_token_id", "must be an integer or a list of integers");
    }
  }

  RETURN_IF_ERROR(ParseMoe(r, j, c));
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open (missing config.json?)"));
  std::stringstream text;
  text << in.rdbuf();
  return ParseModelConfig(text.str(), path);
}

}  // namespace moeserve
