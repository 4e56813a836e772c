// libFuzzer target: the safetensors header and offsets validation.
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A private copy, so reads past `size` are caught by ASan rather than hitting fuzzer memory.
  std::vector<unsigned char> bytes(data, data + size);
  auto tensors = moeserve::ParseSafetensors(bytes.data(), bytes.size(), "fuzz.safetensors");
  if (tensors.ok()) {
    // Every accepted tensor must lie inside the buffer: touch its first and last byte.
    volatile unsigned char sink = 0;
    for (const auto& [name, view] : *tensors) {
      if (view.num_bytes > 0) sink = sink + view.data[0] + view.data[view.num_bytes - 1];
    }
  }
  return 0;
}
