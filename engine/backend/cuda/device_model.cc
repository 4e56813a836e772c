#include "engine/backend/cuda/device_model.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace moeserve::cuda {
namespace {

// Packs a (possibly strided) host matrix into bf16 and uploads it.
absl::Status UploadMatrix(const WeightMatrix& m, const char* name, DeviceMatrix& out, int64_t& bytes) {
  if (m.empty()) return absl::OkStatus();
  std::vector<uint16_t> host(static_cast<size_t>(m.rows * m.cols));
  std::vector<float> row(static_cast<size_t>(m.cols));
  for (int64_t r = 0; r < m.rows; ++r) {
    uint16_t* dst = &host[static_cast<size_t>(r * m.cols)];
    if (m.dtype == DType::kBF16) {
      std::memcpy(dst, m.RowPtr(r), m.cols * sizeof(uint16_t));
    } else {
      ConvertToF32(m.dtype, m.RowPtr(r), m.cols, row.data());
      for (int64_t c = 0; c < m.cols; ++c) dst[c] = F32ToBf16(row[c]);
    }
  }
  absl::Status s = out.data.Upload(reinterpret_cast<const bf16*>(host.data()), host.size());
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat("uploading ", name, ": ", s.message()));
  out.rows = m.rows;
  out.cols = m.cols;
  bytes += out.data.bytes();
  return absl::OkStatus();
}

absl::Status UploadF32(const std::vector<float>& v, DeviceBuffer<float>& out, int64_t& bytes) {
  if (v.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(out.Upload(v.data(), v.size()));
  bytes += out.bytes();
  return absl::OkStatus();
}

absl::Status UploadF32Matrix(const WeightMatrix& m, DeviceBuffer<float>& out, int64_t& bytes) {
  std::vector<float> host(static_cast<size_t>(m.rows * m.cols));
  for (int64_t r = 0; r < m.rows; ++r) ConvertToF32(m.dtype, m.RowPtr(r), m.cols, &host[r * m.cols]);
  return UploadF32(host, out, bytes);
}

absl::Status UploadFfn(const FfnWeights& f, DeviceFfn& out, int64_t& bytes) {
  RETURN_IF_ERROR(UploadMatrix(f.gate, "ffn gate", out.gate, bytes));
  RETURN_IF_ERROR(UploadMatrix(f.up, "ffn up", out.up, bytes));
  RETURN_IF_ERROR(UploadMatrix(f.down, "ffn down", out.down, bytes));
  RETURN_IF_ERROR(UploadF32(f.gate_bias, out.gate_bias, bytes));
  RETURN_IF_ERROR(UploadF32(f.up_bias, out.up_bias, bytes));
  return UploadF32(f.down_bias, out.down_bias, bytes);
}

DeviceExpertAct ToDevice(ExpertAct a) {
  switch (a) {
    case ExpertAct::kNormSilu: return DeviceExpertAct::kNormSilu;
    case ExpertAct::kNormSiluNoMean: return DeviceExpertAct::kNormSiluNoMean;
    case ExpertAct::kNormSiluNorms: return DeviceExpertAct::kNormSiluNorms;
    case ExpertAct::kSilu: return DeviceExpertAct::kSilu;
    case ExpertAct::kGelu: return DeviceExpertAct::kGelu;
  }
  return DeviceExpertAct::kSilu;
}

absl::Status UploadExperts(const ExpertBank& b, DeviceExperts& out, int64_t& bytes) {
  out.num_experts = b.num_experts;
  out.width = b.width;
  out.act = ToDevice(b.act);
  out.epsilon = b.epsilon;
  RETURN_IF_ERROR(UploadMatrix(b.up, "expert up", out.up, bytes));
  RETURN_IF_ERROR(UploadMatrix(b.gate, "expert gate", out.gate, bytes));
  DeviceMatrix down;
  RETURN_IF_ERROR(UploadMatrix(b.down, "expert down", down, bytes));
  out.down = std::move(down.data);
  if (b.down_stacked) {  // [E·H, d]
    out.down_expert_stride = b.hidden * b.width;
    out.down_row_stride = b.width;
  } else {  // [H, E·d]
    out.down_expert_stride = b.width;
    out.down_row_stride = int64_t{b.num_experts} * b.width;
  }
  RETURN_IF_ERROR(UploadF32(b.act_norm_weight, out.gamma, bytes));
  RETURN_IF_ERROR(UploadF32(b.mean_vector, out.mean_vector, bytes));
  RETURN_IF_ERROR(UploadF32(b.up_bias, out.up_bias, bytes));
  RETURN_IF_ERROR(UploadF32(b.gate_bias, out.gate_bias, bytes));
  RETURN_IF_ERROR(UploadF32(b.down_bias, out.down_bias, bytes));
  out.max_tile = ExpertUpMaxTile(static_cast<int>(b.width), b.gated());
  if (out.max_tile < 1) {
    return absl::InvalidArgumentError(absl::StrCat("model.backend cuda: expert width ", b.width,
                                                   " is too wide for the expert kernel"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceModel>> UploadModel(const ModelWeights& w) {
  auto dm = std::make_unique<DeviceModel>();
  int64_t& bytes = dm->bytes;
  const ModelConfig& c = w.config;
  if (c.head_dim > 256) {
    return absl::InvalidArgumentError(absl::StrCat("model.backend cuda: head_dim ", c.head_dim, " > 256"));
  }
  RETURN_IF_ERROR(UploadMatrix(w.embed, "embed_tokens", dm->embed, bytes));
  RETURN_IF_ERROR(UploadMatrix(w.pos_embed, "position embeddings", dm->pos_embed, bytes));
  if (w.head.data == w.embed.data) {
    dm->head = dm->embed.get();
  } else {
    RETURN_IF_ERROR(UploadMatrix(w.head, "lm_head", dm->head_storage, bytes));
    dm->head = dm->head_storage.get();
  }
  RETURN_IF_ERROR(UploadF32(w.final_norm, dm->final_norm, bytes));
  RETURN_IF_ERROR(UploadF32(w.final_norm_bias, dm->final_norm_bias, bytes));
  if (c.positions == PositionKind::kRope) {
    // The CPU RopeTable's values: fp32 inverse frequencies, angles in double.
    const int hd = static_cast<int>(c.head_dim), half = hd / 2;
    const int64_t P = c.max_position_embeddings;
    std::vector<float> cos(P * half), sin(P * half);
    for (int i = 0; i < half; ++i) {
      const float inv_freq = static_cast<float>(std::pow(c.rope_theta, -2.0 * i / hd));
      for (int64_t p = 0; p < P; ++p) {
        const double angle = static_cast<double>(p) * inv_freq;
        cos[p * half + i] = static_cast<float>(std::cos(angle));
        sin[p * half + i] = static_cast<float>(std::sin(angle));
      }
    }
    RETURN_IF_ERROR(UploadF32(cos, dm->rope_cos, bytes));
    RETURN_IF_ERROR(UploadF32(sin, dm->rope_sin, bytes));
  }
  dm->layers.resize(w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& L = w.layers[i];
    DeviceLayer& D = dm->layers[i];
    RETURN_IF_ERROR(UploadF32(L.input_norm, D.input_norm, bytes));
    RETURN_IF_ERROR(UploadF32(L.input_norm_bias, D.input_norm_bias, bytes));
    RETURN_IF_ERROR(UploadF32(L.post_attention_norm, D.post_norm, bytes));
    RETURN_IF_ERROR(UploadF32(L.post_attention_norm_bias, D.post_norm_bias, bytes));
    RETURN_IF_ERROR(UploadMatrix(L.q, "q_proj", D.q, bytes));
    RETURN_IF_ERROR(UploadMatrix(L.k, "k_proj", D.k, bytes));
    RETURN_IF_ERROR(UploadMatrix(L.v, "v_proj", D.v, bytes));
    RETURN_IF_ERROR(UploadMatrix(L.o, "o_proj", D.o, bytes));
    RETURN_IF_ERROR(UploadF32(L.q_bias, D.q_bias, bytes));
    RETURN_IF_ERROR(UploadF32(L.k_bias, D.k_bias, bytes));
    RETURN_IF_ERROR(UploadF32(L.v_bias, D.v_bias, bytes));
    RETURN_IF_ERROR(UploadF32(L.o_bias, D.o_bias, bytes));
    if (!L.is_moe) {
      RETURN_IF_ERROR(UploadFfn(L.dense, D.dense, bytes));
      continue;
    }
    RETURN_IF_ERROR(UploadF32Matrix(L.moe.router_weight, D.router, bytes));
    RETURN_IF_ERROR(UploadExperts(L.moe.experts, D.experts, bytes));
    if (L.moe.shared) {
      D.has_shared = true;
      RETURN_IF_ERROR(UploadFfn(*L.moe.shared, D.shared, bytes));
    }
  }
  return dm;
}

}  // namespace moeserve::cuda
