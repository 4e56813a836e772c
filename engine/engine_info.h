// What an engine serves, as plain values: the one source of model facts for the server (GetModelInfo,
// moeserve_model_info, KV sizing, per-request MoE totals) and the tools. Filled once by the engine
// at creation from the loaded weights and the backend actually in use.
#ifndef MOESERVE_ENGINE_ENGINE_INFO_H_
#define MOESERVE_ENGINE_ENGINE_INFO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "engine/kv_cache.h"

namespace moeserve {

// Where the forward pass runs. kCuda needs a build with the CUDA backend and a GPU
// (docs/CUDA.md); the CPU backend is the reference.
enum class Backend { kCpu, kCuda };
// What the configuration asks for: kAuto takes CUDA when this binary has it and a device is
// present, the CPU otherwise.
enum class BackendChoice { kAuto, kCpu, kCuda };

const char* BackendName(Backend b);
const char* BackendChoiceName(BackendChoice b);

struct MoeLayerInfo {
  int layer = 0;        // index among all layers
  int num_experts = 0;  // routed experts
};

struct EngineInfo {
  std::string architecture;  // deco, blockffn, topk_moe, remoe, topp_moe, softmoe, moe, dense
  std::string router;        // RouterKindName, or "none" for a dense model
  int num_layers = 0;
  std::vector<MoeLayerInfo> moe_layers;
  int num_experts = 0;   // per MoE layer (0 for a dense model)
  int expert_width = 0;
  int active_expert_budget = 0;  // k of a top-k router; 0 where the count varies per token
  int64_t vocab_size = 0;
  int64_t max_context = 0;
  int64_t total_parameters = 0;
  int64_t bos_token_id = 0;
  std::vector<int64_t> eos_token_ids;
  KvCacheShape kv;               // shape, block count and element type of the cache in use
  Backend backend = Backend::kCpu;
  std::string backend_reason;    // why this backend (model.backend: auto explains its choice)
  std::string device;            // the CPU kernel set's machine or the GPU's name
  DType dtype = DType::kF32;     // compute dtype of the weights
  std::string kernels;           // CPU kernel set, or the CUDA backend's description
  int num_threads = 0;           // CPU threads the forward pass uses
  std::vector<std::string> warnings;  // from loading the config (unknown keys, stale fields)

  // Routed experts of layer `layer`; 0 for a dense layer.
  int ExpertsOfLayer(int layer) const {
    for (const MoeLayerInfo& l : moe_layers) {
      if (l.layer == layer) return l.num_experts;
    }
    return 0;
  }
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_ENGINE_INFO_H_
