#include "engine/backend/cuda/device_router.h"

#include <cmath>

namespace moeserve::cuda {

absl::Status BuildDeviceRouter(const RouterSpec& spec, bool force_host, DeviceRouter& out) {
  const int E = spec.num_experts;
  out.on_device = !force_host && E >= 1 && E <= kMaxDeviceExperts;
  if (!out.on_device) return absl::OkStatus();
  RouterArgs& a = out.args;
  a.kind = spec.kind;
  a.E = E;
  a.norm = spec.norm;
  a.epsilon = spec.epsilon;
  if (!spec.norm_weight.empty()) {
    if (absl::Status s = out.norm_weight.Upload(spec.norm_weight.data(), spec.norm_weight.size()); !s.ok()) return s;
    a.norm_weight = out.norm_weight.get();
    a.norm_weight_size = static_cast<int>(spec.norm_weight.size());
  }
  if (!spec.expert_bias.empty()) {
    if (absl::Status s = out.expert_bias.Upload(spec.expert_bias.data(), spec.expert_bias.size()); !s.ok()) return s;
    a.expert_bias = out.expert_bias.get();
  }
  a.bias_rms = spec.bias_apply == BiasApply::kRms;
  a.topk = spec.topk;
  a.softmax = spec.score_function == ScoreFunction::kSoftmax;
  a.pre_softmax = spec.pre_softmax;
  a.scale = static_cast<float>(spec.scaling_factor.value_or(1.0));
  // ReMoE's clamp as the host computes it (remoe_router.cc): keep ⌊ratio·E⌋ when 0 < ratio < 1.
  a.remoe_keep = spec.clamp_ratio > 0.0 && spec.clamp_ratio < 1.0
                     ? static_cast<int>(std::floor(spec.clamp_ratio * E))
                     : -1;
  a.topp = spec.topp;
  a.lapsum_k = spec.lapsum_k;
  a.alpha = spec.lapsum_scale;
  a.threshold_coeff = spec.threshold_coeff;
  a.cap_coeff = spec.cap_coeff;
  a.lapsum_cap = spec.lapsum_cap;
  a.lapsum_theta0 = spec.lapsum_theta0;
  return absl::OkStatus();
}

}  // namespace moeserve::cuda
