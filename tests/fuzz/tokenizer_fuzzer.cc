// libFuzzer target: tokenizer input (arbitrary bytes as text) and streaming detokenisation of
// arbitrary ids; streamed text must always be valid UTF-8.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "engine/tokenizer.h"

namespace {

bool ValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const int n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

const moeserve::Tokenizer* Get() {
  static std::unique_ptr<moeserve::Tokenizer> tokenizer = [] {
    auto t = moeserve::Tokenizer::Load(MOESERVE_FUZZ_TOKENIZER_DIR);
    if (!t.ok()) std::abort();  // the fuzz build generates this model
    return std::move(*t);
  }();
  return tokenizer.get();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const moeserve::Tokenizer* tokenizer = Get();
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto ids = tokenizer->Encode(text, /*add_bos=*/true);
  moeserve::StreamingDetokenizer detok(tokenizer);
  std::string streamed;
  // Bytes pairs as ids, including ids outside the vocabulary.
  for (size_t i = 0; i + 1 < size; i += 2) {
    const int32_t id = (static_cast<int32_t>(data[i]) << 8 | data[i + 1]) - 1000;
    streamed += detok.Push(id);
  }
  streamed += detok.Flush();
  if (!ValidUtf8(streamed)) __builtin_trap();
  (void)ids;
  return 0;
}
