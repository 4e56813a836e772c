// libFuzzer target: config.json parsing (DECO key rules, enums, refusals).
#include <cstdint>
#include <string>

#include "engine/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = moeserve::ParseModelConfig(text, "fuzz/config.json");
  if (config.ok()) {
    // Accepted configs are internally consistent.
    if (config->num_layers.value < 1 || config->head_dim < 1 ||
        config->num_heads.value % config->num_kv_groups.value != 0) {
      __builtin_trap();
    }
    if (config->num_experts > 0 && static_cast<int64_t>(config->moe_layer.size()) != config->num_layers.value) {
      __builtin_trap();
    }
  }
  return 0;
}
