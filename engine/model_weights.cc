#include "engine/model_weights.h"

#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/moe/lapsum.h"
#include "common/status_macros.h"

namespace moeserve {
namespace {

std::string LayerName(int64_t i, const std::string& suffix) {
  return absl::StrCat("model.layers.", i, ".", suffix);
}

constexpr char kEtaTensor[] = "model.moe_budget.eta";

// Turns checkpoint tensors into compute weights, owning whatever had to be converted.
class WeightBuilder {
 public:
  WeightBuilder(TensorStore& store, DType dtype, ModelWeights& out) : store_(store), dtype_(dtype), out_(out) {}

  // A 2-D compute matrix [rows, cols] from a tensor of exactly `shape`.
  absl::StatusOr<WeightMatrix> Matrix(const std::string& name, const std::vector<int64_t>& shape, int64_t rows,
                                      int64_t cols) {
    ASSIGN_OR_RETURN(const TensorView* t, store_.Take(name, shape));
    return Convert(*t, dtype_, rows, cols);
  }
  // A [rows, blocks·width] matrix of column blocks (BlockFFN's expert down projection
  // [H, E·d]) stored block-major as [blocks·rows, width]: each expert's slice becomes one
  // contiguous run that the hardware prefetchers follow, where in the checkpoint's layout it is
  // width-wide pieces strided blocks·width apart. Values and int8 row scales are unchanged.
  absl::StatusOr<WeightMatrix> BlockMajor(const std::string& name, const std::vector<int64_t>& shape, int64_t rows,
                                          int64_t blocks, int64_t width) {
    const size_t buffers_before = out_.buffers.size();
    ASSIGN_OR_RETURN(const WeightMatrix m, Matrix(name, shape, rows, blocks * width));
    const int64_t esize = DTypeSize(m.dtype), row_bytes = width * esize;
    auto data = std::make_unique<unsigned char[]>(blocks * rows * row_bytes);
    std::unique_ptr<unsigned char[]> scales;
    if (m.scales != nullptr) scales = std::make_unique<unsigned char[]>(blocks * rows * sizeof(float));
    for (int64_t b = 0; b < blocks; ++b) {
      for (int64_t r = 0; r < rows; ++r) {
        std::memcpy(data.get() + (b * rows + r) * row_bytes, m.RowPtr(r) + b * row_bytes, row_bytes);
        if (scales) reinterpret_cast<float*>(scales.get())[b * rows + r] = m.scales[r];
      }
    }
    out_.buffers.resize(buffers_before);  // drops the converted [rows, blocks·width] copy, if any
    WeightMatrix stacked{m.dtype, blocks * rows, width, width, data.get(),
                         scales ? reinterpret_cast<const float*>(scales.get()) : nullptr};
    out_.buffers.push_back(std::move(data));
    if (scales) out_.buffers.push_back(std::move(scales));
    return stacked;
  }
  absl::StatusOr<WeightMatrix> MatrixF32(const std::string& name, const std::vector<int64_t>& shape, int64_t rows,
                                         int64_t cols) {
    ASSIGN_OR_RETURN(const TensorView* t, store_.Take(name, shape));
    return Convert(*t, DType::kF32, rows, cols);
  }
  absl::StatusOr<std::vector<float>> Vector(const std::string& name, const std::vector<int64_t>& shape) {
    ASSIGN_OR_RETURN(const TensorView* t, store_.Take(name, shape));
    std::vector<float> v(t->NumElements());
    ConvertToF32(t->dtype, t->data, t->NumElements(), v.data());
    return v;
  }

  // Lookup tables (token and position embeddings) are read a row at a time, never through a
  // matmul, so they stay in a float type when the compute dtype is int8.
  absl::StatusOr<WeightMatrix> Table(const std::string& name, const std::vector<int64_t>& shape, int64_t rows,
                                     int64_t cols) {
    ASSIGN_OR_RETURN(const TensorView* t, store_.Take(name, shape));
    return Convert(*t, dtype_ == DType::kI8 ? DType::kBF16 : dtype_, rows, cols);
  }

 private:
  WeightMatrix Convert(const TensorView& t, DType to, int64_t rows, int64_t cols) {
    const int64_t n = rows * cols;
    const bool aligned = reinterpret_cast<uintptr_t>(t.data) % DTypeSize(to) == 0;
    if (t.dtype == to && aligned) return WeightMatrix{to, rows, cols, cols, t.data};  // mmapped, no copy
    if (to == DType::kI8) return Quantize(t, rows, cols);
    auto buffer = std::make_unique<unsigned char[]>(n * DTypeSize(to));
    if (to == DType::kF32) {
      ConvertToF32(t.dtype, t.data, n, reinterpret_cast<float*>(buffer.get()));
    } else if (t.dtype == to) {
      std::memcpy(buffer.get(), t.data, n * 2);  // only misaligned
    } else {
      auto* dst = reinterpret_cast<uint16_t*>(buffer.get());
      std::vector<float> row(cols);
      for (int64_t r = 0; r < rows; ++r) {
        ConvertToF32(t.dtype, t.data + r * cols * DTypeSize(t.dtype), cols, row.data());
        for (int64_t c = 0; c < cols; ++c)
          dst[r * cols + c] = to == DType::kBF16 ? F32ToBf16(row[c]) : F32ToF16(row[c]);
      }
    }
    WeightMatrix m{to, rows, cols, cols, buffer.get()};
    out_.buffers.push_back(std::move(buffer));
    return m;
  }

  // int8 with one scale per row, from the checkpoint's values (no intermediate rounding).
  WeightMatrix Quantize(const TensorView& t, int64_t rows, int64_t cols) {
    auto q = std::make_unique<unsigned char[]>(rows * cols);
    auto scales = std::make_unique<unsigned char[]>(rows * sizeof(float));
    auto* scale = reinterpret_cast<float*>(scales.get());
    std::vector<float> row(cols);
    for (int64_t r = 0; r < rows; ++r) {
      ConvertToF32(t.dtype, t.data + r * cols * DTypeSize(t.dtype), cols, row.data());
      scale[r] = QuantizeRowInt8(row.data(), cols, reinterpret_cast<int8_t*>(q.get()) + r * cols);
    }
    WeightMatrix m{DType::kI8, rows, cols, cols, q.get(), scale};
    out_.buffers.push_back(std::move(q));
    out_.buffers.push_back(std::move(scales));
    return m;
  }

  TensorStore& store_;
  DType dtype_;
  ModelWeights& out_;
};

// Column means of a matrix (ū of spec §3.3: mean over all rows, per input column).
std::vector<float> RowMean(const WeightMatrix& w) {
  std::vector<double> acc(w.cols, 0.0);
  std::vector<float> row(w.cols);
  for (int64_t r = 0; r < w.rows; ++r) {
    w.RowToF32(r, row.data());
    for (int64_t c = 0; c < w.cols; ++c) acc[c] += row[c];
  }
  std::vector<float> mean(w.cols);
  for (int64_t c = 0; c < w.cols; ++c) mean[c] = static_cast<float>(acc[c] / w.rows);
  return mean;
}

absl::Status ConflictError(const TensorView& t, const KeyedValue& kv, const std::string& implied) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", kv.Describe(), " conflicts with tensor \"",
                                                 t.name, "\" of shape ", t.ShapeString(), " in ", t.file,
                                                 ", which implies ", implied));
}

// Checks the config's dimensions against the tensors before loading them, so that a stale
// or wrong key is reported by name rather than as a bare shape mismatch.
absl::Status CheckConfigAgainstTensors(const ModelConfig& c, const TensorStore& store) {
  const TensorView* embed = store.Find("model.embed_tokens.weight");
  if (embed == nullptr) {
    return absl::NotFoundError(absl::StrCat(store.description(), ": missing tensor \"model.embed_tokens.weight\""));
  }
  if (embed->shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(embed->file, ": tensor \"model.embed_tokens.weight\" has shape ",
                                                   embed->ShapeString(), ", expected [vocab, hidden]"));
  }
  if (embed->shape[1] != c.hidden_size.value) {
    return ConflictError(*embed, c.hidden_size, absl::StrCat("hidden_size=", embed->shape[1]));
  }
  // Layer count: the highest layer index present in the tensors.
  int64_t max_layer = -1;
  for (const auto& [name, view] : store.tensors()) {
    std::vector<std::string> parts = absl::StrSplit(name, '.');
    int64_t index;
    if (parts.size() > 3 && parts[0] == "model" && parts[1] == "layers" && absl::SimpleAtoi(parts[2], &index)) {
      max_layer = std::max(max_layer, index);
    }
  }
  if (max_layer + 1 != c.num_layers.value) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: ", c.num_layers.Describe(),
                                                   " conflicts with the tensors, which hold layers 0..", max_layer,
                                                   " (", max_layer + 1, " layers) in ", store.description()));
  }
  const TensorView* k = store.Find(LayerName(0, "self_attn.k_proj.weight"));
  if (k != nullptr && k->shape.size() == 2 && k->shape[0] != c.num_kv_groups.value * c.head_dim) {
    return ConflictError(*k, c.num_kv_groups,
                         absl::StrCat(k->shape[0] / c.head_dim, " KV groups of head dim ", c.head_dim));
  }
  for (int64_t i = 0; i < c.num_layers.value; ++i) {
    if (c.IsMoeLayer(i)) continue;
    const TensorView* gate = store.Find(LayerName(i, "mlp.gate_proj.weight"));
    if (gate == nullptr || gate->shape.size() != 2) break;  // reported as missing/shape later
    if (!c.ffn_hidden_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json: layer ", i, " is dense but neither ffn_hidden_size nor intermediate_size is set"));
    }
    if (gate->shape[0] != c.ffn_hidden_size->value) {
      return ConflictError(*gate, *c.ffn_hidden_size, absl::StrCat("ffn_hidden_size=", gate->shape[0]));
    }
    break;
  }
  return absl::OkStatus();
}

absl::StatusOr<SwiGluWeights> LoadSwiGlu(WeightBuilder& b, const std::string& prefix, int64_t width, int64_t H) {
  SwiGluWeights w;
  ASSIGN_OR_RETURN(w.gate, b.Matrix(prefix + "gate_proj.weight", {width, H}, width, H));
  ASSIGN_OR_RETURN(w.up, b.Matrix(prefix + "up_proj.weight", {width, H}, width, H));
  ASSIGN_OR_RETURN(w.down, b.Matrix(prefix + "down_proj.weight", {H, width}, H, width));
  return w;
}

absl::Status LoadMoeLayer(WeightBuilder& b, const ModelConfig& c, int64_t i, MoeLayerWeights& moe) {
  const int64_t H = c.hidden_size.value, E = c.num_experts, d = c.expert_width;
  RouterSpec& spec = moe.router_spec;
  spec.kind = c.router;
  spec.num_experts = static_cast<int>(E);
  spec.epsilon = c.norm_epsilon;
  spec.bias_apply = c.bias_apply;
  ExpertBank& bank = moe.experts;
  bank.num_experts = static_cast<int>(E);
  bank.width = d;
  bank.hidden = H;
  bank.epsilon = c.norm_epsilon;
  if (c.use_blockffn) {
    ASSIGN_OR_RETURN(moe.router_weight, b.MatrixF32(LayerName(i, "mlp.moe_router.weight"), {E, H}, E, H));
    spec.norm = c.router_norm;
    if (c.router_norm_fixed) {
      spec.norm_weight = {c.router_norm_init_var};
    } else {
      const int64_t n = c.router_norm_scalar ? 1 : E;
      ASSIGN_OR_RETURN(spec.norm_weight, b.Vector(LayerName(i, "mlp.router_norm.weight"), {n}));
    }
    if (c.expert_bias) {
      ASSIGN_OR_RETURN(spec.expert_bias, b.Vector(LayerName(i, "mlp.expert_bias"), {E}));
    }
    ASSIGN_OR_RETURN(bank.up, b.Matrix(LayerName(i, "mlp.expert_up_proj.weight"), {E * d, H}, E * d, H));
    if (c.experts_gated) {
      ASSIGN_OR_RETURN(bank.gate, b.Matrix(LayerName(i, "mlp.expert_gate_proj.weight"), {E * d, H}, E * d, H));
    }
    ASSIGN_OR_RETURN(bank.down, b.BlockMajor(LayerName(i, "mlp.expert_down_proj.weight"), {H, E * d}, H, E, d));
    bank.down_stacked = true;
    bank.act = c.expert_act;
    if (c.expert_act == ExpertAct::kNormSilu || c.expert_act == ExpertAct::kNormSiluNoMean) {
      ASSIGN_OR_RETURN(bank.act_norm_weight, b.Vector(LayerName(i, "mlp.expert_act.rms_norm.weight"), {d}));
    }
    if (bank.NeedsMean()) bank.mean_vector = RowMean(bank.gated() ? bank.gate : bank.up);
  } else {
    ASSIGN_OR_RETURN(moe.router_weight, b.MatrixF32(LayerName(i, "mlp.router.weight"), {E, H}, E, H));
    spec.topk = static_cast<int>(c.topk);
    spec.score_function = c.score_function;
    spec.pre_softmax = c.pre_softmax;
    spec.scaling_factor = c.topk_scaling_factor;
    spec.topp = c.topp;
    spec.clamp_ratio = c.clamp_act_ratio;
    if (c.router == RouterKind::kTopK && c.expert_bias) {
      ASSIGN_OR_RETURN(spec.expert_bias, b.Vector(LayerName(i, "mlp.router.expert_bias"), {E}));
    }
    ASSIGN_OR_RETURN(bank.up, b.Matrix(LayerName(i, "mlp.experts.up_proj.weight"), {E, d, H}, E * d, H));
    if (c.experts_gated) {
      ASSIGN_OR_RETURN(bank.gate, b.Matrix(LayerName(i, "mlp.experts.gate_proj.weight"), {E, d, H}, E * d, H));
    }
    ASSIGN_OR_RETURN(bank.down, b.Matrix(LayerName(i, "mlp.experts.down_proj.weight"), {E, H, d}, E * H, d));
    bank.down_stacked = true;
    bank.act = ExpertAct::kSilu;
  }
  if (c.shared_width > 0) {
    ASSIGN_OR_RETURN(moe.shared, LoadSwiGlu(b, LayerName(i, "mlp.shared_experts."), c.shared_width, H));
  }
  moe.router = MakeRouter(spec);
  return absl::OkStatus();
}

// ---- SoftMoE server checkpoints (spec softmoe.md §7.2.2)

using ShapeMap = std::map<std::string, std::vector<int64_t>>;

// Exactly the tensors whose condition holds (model.moe_budget.eta, optional, is not listed).
ShapeMap SoftMoeTensorSet(const ModelConfig& c) {
  const int64_t H = c.hidden_size.value, V = *c.vocab_size_key, n = c.num_experts, F = c.expert_width;
  const int64_t q_rows = c.num_heads.value * c.head_dim, kv_rows = c.num_kv_groups.value * c.head_dim;
  const bool layer_norm = c.norm == NormKind::kLayer, swiglu = c.ffn_act == FfnAct::kSwiGlu;
  ShapeMap t;
  t["model.embed_tokens.weight"] = {V, H};
  if (c.positions == PositionKind::kLearned) t["model.embed_positions.weight"] = {c.max_position_embeddings, H};
  auto norm = [&](const std::string& prefix) {
    t[prefix + ".weight"] = {H};
    if (layer_norm) t[prefix + ".bias"] = {H};
  };
  for (int64_t i = 0; i < c.num_layers.value; ++i) {
    norm(LayerName(i, "input_layernorm"));
    norm(LayerName(i, "post_attention_layernorm"));
    t[LayerName(i, "self_attn.q_proj.weight")] = {q_rows, H};
    t[LayerName(i, "self_attn.k_proj.weight")] = {kv_rows, H};
    t[LayerName(i, "self_attn.v_proj.weight")] = {kv_rows, H};
    t[LayerName(i, "self_attn.o_proj.weight")] = {H, q_rows};
    if (c.qkv_bias) {
      t[LayerName(i, "self_attn.q_proj.bias")] = {q_rows};
      t[LayerName(i, "self_attn.k_proj.bias")] = {kv_rows};
      t[LayerName(i, "self_attn.v_proj.bias")] = {kv_rows};
    }
    if (c.linear_bias) t[LayerName(i, "self_attn.o_proj.bias")] = {H};
    if (c.IsMoeLayer(i)) {
      t[LayerName(i, "mlp.router.weight")] = {n, H};
      t[LayerName(i, "mlp.experts.up_proj.weight")] = {n, F, H};
      if (swiglu) t[LayerName(i, "mlp.experts.gate_proj.weight")] = {n, F, H};
      t[LayerName(i, "mlp.experts.down_proj.weight")] = {n, H, F};
      if (c.linear_bias) {
        t[LayerName(i, "mlp.experts.up_proj.bias")] = {n, F};
        if (swiglu) t[LayerName(i, "mlp.experts.gate_proj.bias")] = {n, F};
        t[LayerName(i, "mlp.experts.down_proj.bias")] = {n, H};
      }
    } else {
      const int64_t Fd = c.ffn_hidden_size->value;
      t[LayerName(i, "mlp.up_proj.weight")] = {Fd, H};
      if (swiglu) t[LayerName(i, "mlp.gate_proj.weight")] = {Fd, H};
      t[LayerName(i, "mlp.down_proj.weight")] = {H, Fd};
      if (c.linear_bias) {
        t[LayerName(i, "mlp.up_proj.bias")] = {Fd};
        if (swiglu) t[LayerName(i, "mlp.gate_proj.bias")] = {Fd};
        t[LayerName(i, "mlp.down_proj.bias")] = {H};
      }
    }
  }
  norm("model.norm");
  if (!c.tie_word_embeddings) t["lm_head.weight"] = {V, H};
  return t;
}

// Why a tensor is not part of this SoftMoE model, for the refusal message.
std::string UnexpectedReason(const ModelConfig& c, const std::string& name) {
  auto has = [&](const char* part) { return name.find(part) != std::string::npos; };
  const bool bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
  std::vector<std::string> parts = absl::StrSplit(name, '.');
  int64_t index;
  if (parts.size() > 3 && parts[0] == "model" && parts[1] == "layers" && absl::SimpleAtoi(parts[2], &index) &&
      (index < 0 || index >= c.num_layers.value)) {
    return absl::StrCat("num_layers=", c.num_layers.value, " has no layer ", parts[2]);
  }
  if (name == "lm_head.weight") return "tie_word_embeddings is true, so the LM head is model.embed_tokens.weight";
  if (name == "model.embed_positions.weight") return "position_embedding_type is \"rope\"";
  if (bias && (has("layernorm") || name == "model.norm.bias"))
    return "norm_type is \"rmsnorm\", whose norms have no bias";
  if (bias && has("router")) return "a router never has a bias";
  if (bias && (has("q_proj") || has("k_proj") || has("v_proj"))) return "add_qkv_bias and add_bias_linear are false";
  if (bias) return "add_bias_linear is false";
  if (has("gate_proj")) return "expert_activation is \"gelu\", which has no gate projection";
  if (has("mlp.experts.") || has("mlp.router.")) return "the layer is dense (moe_layer_freq)";
  if (has("mlp.up_proj") || has("mlp.down_proj")) return "the layer is an MoE layer (moe_layer_freq)";
  return "not part of the model that config.json describes";
}

absl::Status SoftMoeConflict(const TensorView& t, const char* key, int64_t value, const std::string& implied) {
  return ConflictError(t, KeyedValue{value, key, ""}, implied);
}

// Refuses a missing, unexpected or wrongly shaped tensor before anything is loaded; the
// dimensions the config states are checked against the data first so a wrong key is named.
absl::Status CheckSoftMoeTensors(const ModelConfig& c, const TensorStore& store) {
  const TensorView* embed = store.Find("model.embed_tokens.weight");
  if (embed != nullptr && embed->shape.size() == 2) {
    if (embed->shape[0] != *c.vocab_size_key) {
      return SoftMoeConflict(*embed, "vocab_size", *c.vocab_size_key, absl::StrCat("vocab_size=", embed->shape[0]));
    }
    if (embed->shape[1] != c.hidden_size.value) {
      return SoftMoeConflict(*embed, "hidden_size", c.hidden_size.value, absl::StrCat("hidden_size=", embed->shape[1]));
    }
  }
  for (int64_t i = 0; i < c.num_layers.value; ++i) {
    if (!c.IsMoeLayer(i)) continue;
    const TensorView* router = store.Find(LayerName(i, "mlp.router.weight"));
    if (router != nullptr && router->shape.size() == 2 && router->shape[0] != c.num_experts) {
      return SoftMoeConflict(*router, "num_experts", c.num_experts, absl::StrCat("num_experts=", router->shape[0]));
    }
    const TensorView* up = store.Find(LayerName(i, "mlp.experts.up_proj.weight"));
    if (up != nullptr && up->shape.size() == 3 && up->shape[1] != c.expert_width) {
      return SoftMoeConflict(*up, "moe_ffn_hidden_size", c.expert_width,
                             absl::StrCat("moe_ffn_hidden_size=", up->shape[1]));
    }
    break;
  }
  const ShapeMap expected = SoftMoeTensorSet(c);
  for (const auto& [name, shape] : expected) {
    const TensorView* t = store.Find(name);
    if (t == nullptr) {
      return absl::NotFoundError(absl::StrCat(store.description(), ": missing tensor \"", name, "\" (expected shape [",
                                              absl::StrJoin(shape, ", "), "])"));
    }
    if (t->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor \"", name, "\" has shape ", t->ShapeString(),
                                                     ", expected [", absl::StrJoin(shape, ", "), "]"));
    }
  }
  for (const auto& [name, view] : store.tensors()) {
    if (expected.count(name)) continue;
    if (name == kEtaTensor) {
      const int64_t Lm = c.NumMoeLayers();
      if (view.shape != std::vector<int64_t>{Lm}) {
        return absl::InvalidArgumentError(absl::StrCat(view.file, ": tensor \"", name, "\" has shape ",
                                                       view.ShapeString(), ", expected [", Lm,
                                                       "] (one η per MoE layer)"));
      }
      continue;
    }
    return absl::InvalidArgumentError(absl::StrCat(view.file, ": unexpected tensor \"", name, "\" ", view.ShapeString(),
                                                   " (", UnexpectedReason(c, name), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<FfnWeights> LoadFfn(WeightBuilder& b, const ModelConfig& c, const std::string& prefix, int64_t width,
                                   int64_t H) {
  FfnWeights w;
  if (c.ffn_act == FfnAct::kSwiGlu) {
    ASSIGN_OR_RETURN(w.gate, b.Matrix(prefix + "gate_proj.weight", {width, H}, width, H));
  }
  ASSIGN_OR_RETURN(w.up, b.Matrix(prefix + "up_proj.weight", {width, H}, width, H));
  ASSIGN_OR_RETURN(w.down, b.Matrix(prefix + "down_proj.weight", {H, width}, H, width));
  if (c.linear_bias) {
    if (w.gated()) {
      ASSIGN_OR_RETURN(w.gate_bias, b.Vector(prefix + "gate_proj.bias", {width}));
    }
    ASSIGN_OR_RETURN(w.up_bias, b.Vector(prefix + "up_proj.bias", {width}));
    ASSIGN_OR_RETURN(w.down_bias, b.Vector(prefix + "down_proj.bias", {H}));
  }
  return w;
}

absl::Status LoadSoftMoe(WeightBuilder& b, TensorStore& store, const std::string& config_path, ModelWeights& w) {
  ModelConfig& c = w.config;
  const int64_t H = c.hidden_size.value, hd = c.head_dim, n = c.num_experts, F = c.expert_width;
  const int64_t q_rows = c.num_heads.value * hd, kv_rows = c.num_kv_groups.value * hd;
  const int64_t V = *c.vocab_size_key;
  const bool layer_norm = c.norm == NormKind::kLayer;
  w.vocab_size = V;

  // k_l per MoE layer (η possibly from the tensor, read as float64 whatever its dtype).
  std::optional<std::vector<double>> eta;
  std::string eta_label = absl::StrCat("\"", kEtaTensor, "\"");
  if (const TensorView* t = store.Find(kEtaTensor); t != nullptr) {
    eta_label = absl::StrCat("\"", kEtaTensor, "\" in ", t->file);
    ASSIGN_OR_RETURN(std::vector<float> v, b.Vector(kEtaTensor, {c.NumMoeLayers()}));
    eta = std::vector<double>(v.begin(), v.end());
  }
  ASSIGN_OR_RETURN(c.moe_k, ResolveSoftMoeK(c, eta, config_path, eta_label));

  ASSIGN_OR_RETURN(w.embed, b.Table("model.embed_tokens.weight", {V, H}, V, H));
  if (c.positions == PositionKind::kLearned) {
    const int64_t P = c.max_position_embeddings;
    ASSIGN_OR_RETURN(w.pos_embed, b.Table("model.embed_positions.weight", {P, H}, P, H));
  }
  w.tied_head = c.tie_word_embeddings;
  if (w.tied_head) {
    w.head = w.embed;
  } else {
    ASSIGN_OR_RETURN(w.head, b.Matrix("lm_head.weight", {V, H}, V, H));
  }
  ASSIGN_OR_RETURN(w.final_norm, b.Vector("model.norm.weight", {H}));
  if (layer_norm) {
    ASSIGN_OR_RETURN(w.final_norm_bias, b.Vector("model.norm.bias", {H}));
  }

  w.layers.resize(c.num_layers.value);
  int64_t moe_ordinal = 0;
  for (int64_t i = 0; i < c.num_layers.value; ++i) {
    LayerWeights& l = w.layers[i];
    ASSIGN_OR_RETURN(l.input_norm, b.Vector(LayerName(i, "input_layernorm.weight"), {H}));
    ASSIGN_OR_RETURN(l.post_attention_norm, b.Vector(LayerName(i, "post_attention_layernorm.weight"), {H}));
    if (layer_norm) {
      ASSIGN_OR_RETURN(l.input_norm_bias, b.Vector(LayerName(i, "input_layernorm.bias"), {H}));
      ASSIGN_OR_RETURN(l.post_attention_norm_bias, b.Vector(LayerName(i, "post_attention_layernorm.bias"), {H}));
    }
    ASSIGN_OR_RETURN(l.q, b.Matrix(LayerName(i, "self_attn.q_proj.weight"), {q_rows, H}, q_rows, H));
    ASSIGN_OR_RETURN(l.k, b.Matrix(LayerName(i, "self_attn.k_proj.weight"), {kv_rows, H}, kv_rows, H));
    ASSIGN_OR_RETURN(l.v, b.Matrix(LayerName(i, "self_attn.v_proj.weight"), {kv_rows, H}, kv_rows, H));
    ASSIGN_OR_RETURN(l.o, b.Matrix(LayerName(i, "self_attn.o_proj.weight"), {H, q_rows}, H, q_rows));
    if (c.qkv_bias) {
      ASSIGN_OR_RETURN(l.q_bias, b.Vector(LayerName(i, "self_attn.q_proj.bias"), {q_rows}));
      ASSIGN_OR_RETURN(l.k_bias, b.Vector(LayerName(i, "self_attn.k_proj.bias"), {kv_rows}));
      ASSIGN_OR_RETURN(l.v_bias, b.Vector(LayerName(i, "self_attn.v_proj.bias"), {kv_rows}));
    }
    if (c.linear_bias) {
      ASSIGN_OR_RETURN(l.o_bias, b.Vector(LayerName(i, "self_attn.o_proj.bias"), {H}));
    }
    l.is_moe = c.IsMoeLayer(i);
    if (!l.is_moe) {
      ASSIGN_OR_RETURN(l.dense, LoadFfn(b, c, LayerName(i, "mlp."), c.ffn_hidden_size->value, H));
      continue;
    }
    MoeLayerWeights& moe = l.moe;
    ASSIGN_OR_RETURN(moe.router_weight, b.MatrixF32(LayerName(i, "mlp.router.weight"), {n, H}, n, H));
    RouterSpec& spec = moe.router_spec;
    spec.kind = RouterKind::kLapSum;
    spec.num_experts = static_cast<int>(n);
    spec.epsilon = c.norm_epsilon;
    spec.lapsum_scale = c.lapsum_scale;
    spec.threshold_coeff = c.threshold_coeff;
    spec.cap_coeff = c.cap_coeff;
    const LapSumConstants k = MakeLapSumConstants(c.moe_k[moe_ordinal++], static_cast<int>(n), c.threshold_coeff,
                                                  c.cap_coeff);
    spec.lapsum_k = k.k;
    spec.lapsum_cap = k.cap;
    spec.lapsum_theta0 = k.theta0;
    ExpertBank& bank = moe.experts;
    bank.num_experts = static_cast<int>(n);
    bank.width = F;
    bank.hidden = H;
    bank.epsilon = c.norm_epsilon;
    bank.act = c.expert_act;
    const std::string e = "mlp.experts.";
    ASSIGN_OR_RETURN(bank.up, b.Matrix(LayerName(i, e + "up_proj.weight"), {n, F, H}, n * F, H));
    if (c.experts_gated) {
      ASSIGN_OR_RETURN(bank.gate, b.Matrix(LayerName(i, e + "gate_proj.weight"), {n, F, H}, n * F, H));
    }
    ASSIGN_OR_RETURN(bank.down, b.Matrix(LayerName(i, e + "down_proj.weight"), {n, H, F}, n * H, F));
    bank.down_stacked = true;
    if (c.linear_bias) {
      ASSIGN_OR_RETURN(bank.up_bias, b.Vector(LayerName(i, e + "up_proj.bias"), {n, F}));
      if (c.experts_gated) {
        ASSIGN_OR_RETURN(bank.gate_bias, b.Vector(LayerName(i, e + "gate_proj.bias"), {n, F}));
      }
      ASSIGN_OR_RETURN(bank.down_bias, b.Vector(LayerName(i, e + "down_proj.bias"), {n, H}));
    }
    moe.router = MakeRouter(spec);
  }
  return absl::OkStatus();
}

}  // namespace

int64_t ModelWeights::TotalParameters() const {
  int64_t n = embed.rows * embed.cols + (tied_head ? 0 : head.rows * head.cols) + final_norm.size() +
              pos_embed.rows * pos_embed.cols + final_norm_bias.size();
  for (const LayerWeights& l : layers) {
    n += l.input_norm.size() + l.post_attention_norm.size();
    n += l.input_norm_bias.size() + l.post_attention_norm_bias.size();
    n += l.q_bias.size() + l.k_bias.size() + l.v_bias.size() + l.o_bias.size();
    for (const WeightMatrix* w : {&l.q, &l.k, &l.v, &l.o}) n += w->rows * w->cols;
    if (!l.is_moe) {
      for (const WeightMatrix* w : {&l.dense.gate, &l.dense.up, &l.dense.down}) n += w->rows * w->cols;
      n += l.dense.gate_bias.size() + l.dense.up_bias.size() + l.dense.down_bias.size();
      continue;
    }
    n += l.moe.experts.up_bias.size() + l.moe.experts.gate_bias.size() + l.moe.experts.down_bias.size();
    const MoeLayerWeights& m = l.moe;
    n += m.router_weight.rows * m.router_weight.cols + m.router_spec.expert_bias.size() +
         m.experts.act_norm_weight.size();
    if (m.router_spec.kind == RouterKind::kDecoRelu && m.router_spec.norm_weight.size() > 1) {
      n += m.router_spec.norm_weight.size();
    }
    for (const WeightMatrix* w : {&m.experts.up, &m.experts.gate, &m.experts.down}) n += w->rows * w->cols;
    if (m.shared) {
      for (const WeightMatrix* w : {&m.shared->gate, &m.shared->up, &m.shared->down}) n += w->rows * w->cols;
    }
  }
  return n;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModelWeights(const std::string& dir, const LoadOptions& options) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": model directory not found"));
  }
  auto w = std::make_unique<ModelWeights>();
  ASSIGN_OR_RETURN(w->config, LoadModelConfig(dir));
  ASSIGN_OR_RETURN(w->store, TensorStore::OpenDirectory(dir));
  const ModelConfig& c = w->config;
  w->compute_dtype = options.compute_dtype;
  if (c.family == ModelFamily::kSoftMoe) {
    RETURN_IF_ERROR(CheckSoftMoeTensors(c, *w->store));
    WeightBuilder b(*w->store, options.compute_dtype, *w);
    RETURN_IF_ERROR(LoadSoftMoe(b, *w->store, (std::filesystem::path(dir) / "config.json").string(), *w));
    RETURN_IF_ERROR(w->store->CheckAllTaken());
    return w;
  }
  RETURN_IF_ERROR(CheckConfigAgainstTensors(c, *w->store));

  const int64_t H = c.hidden_size.value, hd = c.head_dim;
  const int64_t q_rows = c.num_heads.value * hd, kv_rows = c.num_kv_groups.value * hd;
  w->vocab_size = w->store->Find("model.embed_tokens.weight")->shape[0];
  const int64_t V = w->vocab_size;
  if (c.vocab_size_key && *c.vocab_size_key != V) {
    w->config.warnings.push_back(absl::StrCat("config.json: vocab_size=", *c.vocab_size_key,
                                              " differs from the embedding's ", V, " rows; using ", V));
  }
  WeightBuilder b(*w->store, options.compute_dtype, *w);
  ASSIGN_OR_RETURN(w->embed, b.Table("model.embed_tokens.weight", {V, H}, V, H));
  w->tied_head = w->store->Find("lm_head.weight") == nullptr;
  if (w->tied_head) {
    w->head = w->embed;
  } else {
    ASSIGN_OR_RETURN(w->head, b.Matrix("lm_head.weight", {V, H}, V, H));
  }
  ASSIGN_OR_RETURN(w->final_norm, b.Vector("model.norm.weight", {H}));

  w->layers.resize(c.num_layers.value);
  for (int64_t i = 0; i < c.num_layers.value; ++i) {
    LayerWeights& l = w->layers[i];
    ASSIGN_OR_RETURN(l.input_norm, b.Vector(LayerName(i, "input_layernorm.weight"), {H}));
    ASSIGN_OR_RETURN(l.post_attention_norm, b.Vector(LayerName(i, "post_attention_layernorm.weight"), {H}));
    ASSIGN_OR_RETURN(l.q, b.Matrix(LayerName(i, "self_attn.q_proj.weight"), {q_rows, H}, q_rows, H));
    ASSIGN_OR_RETURN(l.k, b.Matrix(LayerName(i, "self_attn.k_proj.weight"), {kv_rows, H}, kv_rows, H));
    ASSIGN_OR_RETURN(l.v, b.Matrix(LayerName(i, "self_attn.v_proj.weight"), {kv_rows, H}, kv_rows, H));
    ASSIGN_OR_RETURN(l.o, b.Matrix(LayerName(i, "self_attn.o_proj.weight"), {H, q_rows}, H, q_rows));
    l.is_moe = c.IsMoeLayer(i);
    if (l.is_moe) {
      RETURN_IF_ERROR(LoadMoeLayer(b, c, i, l.moe));
    } else {
      if (!c.ffn_hidden_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("config.json: layer ", i, " is dense but ffn_hidden_size is not set"));
      }
      ASSIGN_OR_RETURN(l.dense, LoadSwiGlu(b, LayerName(i, "mlp."), c.ffn_hidden_size->value, H));
    }
  }
  RETURN_IF_ERROR(w->store->CheckAllTaken());
  return w;
}

}  // namespace moeserve
