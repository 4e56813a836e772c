// The model's weights resident on the device: every matrix in bf16 (converted once at load
// from the host ModelWeights, whatever their dtype), norms, biases, the router and the
// NormSiLU mean vector ū in fp32, and the RoPE cos/sin tables. Layouts are the host ones
// packed (ld = cols): BlockFFN experts keep up [E·d, H] and down [H, E·d]; stacked experts keep
// up [E·d, H] and down [E·H, d] (see DeviceExperts for the down strides).
#ifndef MOESERVE_ENGINE_BACKEND_CUDA_DEVICE_MODEL_H_
#define MOESERVE_ENGINE_BACKEND_CUDA_DEVICE_MODEL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/cuda/device_buffer.h"
#include "engine/backend/cuda/kernels.h"
#include "engine/model_weights.h"

namespace moeserve::cuda {

struct DeviceMatrix {
  DeviceBuffer<bf16> data;
  int64_t rows = 0, cols = 0;
  const bf16* get() const { return data.get(); }
  bool empty() const { return data.empty(); }
};

struct DeviceFfn {
  DeviceMatrix gate, up, down;  // gate empty for GELU
  DeviceBuffer<float> gate_bias, up_bias, down_bias;
  bool gated() const { return !gate.empty(); }
};

struct DeviceExperts {
  int num_experts = 0;
  int64_t width = 0;  // d
  DeviceMatrix up, gate;
  DeviceBuffer<bf16> down;
  int64_t down_expert_stride = 0, down_row_stride = 0;  // element (e, r, j) at e·es + r·rs + j
  DeviceExpertAct act = DeviceExpertAct::kSilu;
  float epsilon = 1e-5f;
  DeviceBuffer<float> gamma, mean_vector, up_bias, gate_bias, down_bias;
  int max_tile = 0;  // ExpertUpMaxTile for this width
};

struct DeviceLayer {
  DeviceBuffer<float> input_norm, input_norm_bias, post_norm, post_norm_bias;
  DeviceMatrix q, k, v, o;
  DeviceBuffer<float> q_bias, k_bias, v_bias, o_bias;
  DeviceFfn dense;                  // !is_moe
  DeviceBuffer<float> router;       // fp32 [E, H]
  DeviceExperts experts;
  bool has_shared = false;
  DeviceFfn shared;
};

struct DeviceModel {
  DeviceMatrix embed, pos_embed;
  DeviceMatrix head_storage;      // empty when the head is tied to the embedding
  const bf16* head = nullptr;     // [V, H]
  DeviceBuffer<float> final_norm, final_norm_bias;
  DeviceBuffer<float> rope_cos, rope_sin;  // [max_positions, h_d/2], empty without RoPE
  std::vector<DeviceLayer> layers;
  int64_t bytes = 0;  // device memory the weights hold
};

// Uploads `w` (synchronously). Errors name the tensor that could not be placed.
absl::StatusOr<std::unique_ptr<DeviceModel>> UploadModel(const ModelWeights& w);

}  // namespace moeserve::cuda

#endif  // MOESERVE_ENGINE_BACKEND_CUDA_DEVICE_MODEL_H_
