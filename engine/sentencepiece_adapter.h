// A plain-C++ wall around libsentencepiece. Its public header defines its own `absl` names,
// which clash with Abseil's, so only sentencepiece_adapter.cc may include it and this header
// uses nothing but the standard library.
#ifndef MOESERVE_ENGINE_SENTENCEPIECE_ADAPTER_H_
#define MOESERVE_ENGINE_SENTENCEPIECE_ADAPTER_H_

#include <memory>
#include <string>
#include <vector>

namespace moeserve {

class SentencePieceAdapter {
 public:
  SentencePieceAdapter();
  ~SentencePieceAdapter();
  // Returns "" on success, else the library's message.
  std::string Load(const std::string& path);
  std::string Encode(const std::string& text, std::vector<int>* ids) const;
  std::string Decode(const std::vector<int>& ids, std::string* text) const;
  int PieceCount() const;
  int BosId() const;
  std::string IdToPiece(int id) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_SENTENCEPIECE_ADAPTER_H_
