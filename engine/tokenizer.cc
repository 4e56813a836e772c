#include "engine/tokenizer.h"

#include <filesystem>

#include "absl/strings/str_cat.h"

namespace moeserve {

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "tokenizer.model").string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no tokenizer (use token-id input)"));
  }
  std::string module_error;
  auto backend = CreateSentencePieceBackend(&module_error);
  if (backend == nullptr) return absl::InternalError(absl::StrCat(path, ": ", module_error));
  std::unique_ptr<Tokenizer> t(new Tokenizer(std::move(backend)));
  const std::string error = t->sp_->Load(path);
  if (!error.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot load SentencePiece model: ", error));
  }
  return t;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(const std::string& text, bool add_bos) const {
  std::vector<int> ids;
  const std::string error = sp_->Encode(text, &ids);
  if (!error.empty()) return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", error));
  std::vector<int32_t> out;
  out.reserve(ids.size() + 1);
  if (add_bos && sp_->BosId() >= 0) out.push_back(sp_->BosId());
  out.insert(out.end(), ids.begin(), ids.end());
  return out;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string text;
  std::vector<int> run;
  auto flush = [&] {
    if (run.empty()) return;
    std::string piece;
    if (sp_->Decode(run, &piece).empty()) text += piece;
    run.clear();
  };
  for (int32_t id : ids) {
    if (id >= 0 && id < sp_->PieceCount()) {
      run.push_back(id);
    } else {
      flush();
      absl::StrAppend(&text, "<", id, ">");
    }
  }
  flush();
  return text;
}

std::string Tokenizer::Piece(int32_t id) const {
  return id >= 0 && id < sp_->PieceCount() ? sp_->IdToPiece(id) : absl::StrCat("<", id, ">");
}

int32_t Tokenizer::vocab_size() const { return sp_->PieceCount(); }
int32_t Tokenizer::bos_id() const { return sp_->BosId(); }

namespace {

// Length of the longest prefix of `s` that does not end inside a UTF-8 sequence.
size_t CompleteUtf8Prefix(const std::string& s) {
  size_t i = s.size();
  int back = 0;
  while (i > 0 && back < 4) {
    const unsigned char c = static_cast<unsigned char>(s[i - 1]);
    if ((c & 0xC0) != 0x80) {  // a lead byte (or ASCII)
      const int need = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
      return back + 1 >= need ? s.size() : i - 1;
    }
    --i;
    ++back;
  }
  return s.size();
}

}  // namespace

std::string StreamingDetokenizer::Push(int32_t id) {
  ids_.push_back(id);
  const std::string text = tokenizer_->Decode(ids_);
  size_t complete = CompleteUtf8Prefix(text);
  // SentencePiece decodes an unfinished byte-fallback sequence as U+FFFD; hold a trailing one
  // back until the next token shows whether the character completes.
  static constexpr char kReplacement[] = "\xEF\xBF\xBD";
  while (complete >= emitted_ + 3 && text.compare(complete - 3, 3, kReplacement) == 0) complete -= 3;
  if (complete <= emitted_) return "";
  std::string delta = text.substr(emitted_, complete - emitted_);
  emitted_ = complete;
  return delta;
}

std::string StreamingDetokenizer::Flush() {
  const std::string text = tokenizer_->Decode(ids_);
  std::string rest = emitted_ < text.size() ? text.substr(emitted_) : "";
  emitted_ = text.size();
  return rest;
}

}  // namespace moeserve
