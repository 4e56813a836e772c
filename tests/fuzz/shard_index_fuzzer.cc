// libFuzzer target: model.safetensors.index.json parsing.
#include <cstdint>
#include <string>

#include "engine/tensor_store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto map = moeserve::ParseShardIndex(text, "fuzz.index.json");
  if (map.ok()) {
    for (const auto& [name, shard] : *map) {
      if (shard.empty() || shard.find('/') != std::string::npos) __builtin_trap();  // must have been refused
    }
  }
  return 0;
}
