// libFuzzer target: the server's YAML configuration.
#include <cstdint>
#include <string>

#include "server/server_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = moeserve::ParseServerConfig(text, "fuzz.yaml", {});
  (void)config;
  return 0;
}
