// The SentencePiece module: the only code that includes libsentencepiece's header. Built as
// libmoeserve_sentencepiece.so and loaded by sentencepiece_loader.cc.
#include <sentencepiece_processor.h>

#include "engine/sentencepiece_adapter.h"

namespace moeserve {
namespace {

class Backend final : public SentencePieceBackend {
 public:
  std::string Load(const std::string& path) override {
    const auto status = sp_.Load(path);
    return status.ok() ? "" : status.ToString();
  }
  std::string Encode(const std::string& text, std::vector<int>* ids) const override {
    const auto status = sp_.Encode(text, ids);
    return status.ok() ? "" : status.ToString();
  }
  std::string Decode(const std::vector<int>& ids, std::string* text) const override {
    const auto status = sp_.Decode(ids, text);
    return status.ok() ? "" : status.ToString();
  }
  int PieceCount() const override { return sp_.GetPieceSize(); }
  int BosId() const override { return sp_.bos_id(); }
  std::string IdToPiece(int id) const override { return sp_.IdToPiece(id); }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace
}  // namespace moeserve

extern "C" __attribute__((visibility("default"))) moeserve::SentencePieceBackend*
moeserve_create_sentencepiece_backend() {
  return new moeserve::Backend();
}
