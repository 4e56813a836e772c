// SentencePiece tokenizer of a model directory (tokenizer.model), with BOS handling per spec
// deco.md §7 and incremental detokenisation for streaming.
#ifndef MOESERVE_ENGINE_TOKENIZER_H_
#define MOESERVE_ENGINE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/sentencepiece_adapter.h"

namespace moeserve {

class Tokenizer {
 public:
  // Loads `dir`/tokenizer.model; NotFound when the directory has none.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& dir);
  ~Tokenizer();

  // Encodes text; prepends BOS when `add_bos` (prompts start with BOS, spec §7).
  absl::StatusOr<std::vector<int32_t>> Encode(const std::string& text, bool add_bos) const;
  // Decodes ids; ids outside the tokenizer's vocabulary become "<id>".
  std::string Decode(const std::vector<int32_t>& ids) const;
  int32_t vocab_size() const;
  // The piece string of an id ("<id>" outside the vocabulary).
  std::string Piece(int32_t id) const;
  int32_t bos_id() const;

 private:
  explicit Tokenizer(std::unique_ptr<SentencePieceBackend> backend) : sp_(std::move(backend)) {}
  std::unique_ptr<SentencePieceBackend> sp_;
};

// Turns a growing list of generated ids into text deltas. Decoding the whole list each time
// and emitting the new suffix keeps multi-byte characters and merged pieces intact; text is
// held back while it ends in an incomplete UTF-8 sequence.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer* tokenizer) : tokenizer_(tokenizer) {}
  // Appends `id` and returns the text that became final.
  std::string Push(int32_t id);
  // Whatever is still held back.
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  std::vector<int32_t> ids_;
  size_t emitted_ = 0;  // bytes of the decoded text already returned
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_TOKENIZER_H_
