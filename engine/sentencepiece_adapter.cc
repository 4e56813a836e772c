#include "engine/sentencepiece_adapter.h"

#include <sentencepiece_processor.h>

namespace moeserve {

struct SentencePieceAdapter::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceAdapter::SentencePieceAdapter() : impl_(std::make_unique<Impl>()) {}
SentencePieceAdapter::~SentencePieceAdapter() = default;

std::string SentencePieceAdapter::Load(const std::string& path) {
  const auto status = impl_->sp.Load(path);
  return status.ok() ? "" : status.ToString();
}

std::string SentencePieceAdapter::Encode(const std::string& text, std::vector<int>* ids) const {
  const auto status = impl_->sp.Encode(text, ids);
  return status.ok() ? "" : status.ToString();
}

std::string SentencePieceAdapter::Decode(const std::vector<int>& ids, std::string* text) const {
  const auto status = impl_->sp.Decode(ids, text);
  return status.ok() ? "" : status.ToString();
}

int SentencePieceAdapter::PieceCount() const { return impl_->sp.GetPieceSize(); }
int SentencePieceAdapter::BosId() const { return impl_->sp.bos_id(); }
std::string SentencePieceAdapter::IdToPiece(int id) const { return impl_->sp.IdToPiece(id); }

}  // namespace moeserve
