#include "server/openai/chat_template.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace moeserve {
namespace {

constexpr char kChatMl[] = "<|im_start|>{role}\n{content}<|im_end|>\n";

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(const std::string& spec) {
  ChatTemplate t;
  t.source_ = spec.empty() || spec == "chatml" ? "chatml" : "config";
  const std::string text = t.source_ == "chatml" ? kChatMl : spec;
  std::string literal;
  int contents = 0;
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, 2, "{{") == 0 || text.compare(i, 2, "}}") == 0) {
      literal += text[i];
      i += 2;
    } else if (text.compare(i, 6, "{role}") == 0 || text.compare(i, 9, "{content}") == 0) {
      const bool role = text[i + 1] == 'r';
      if (!literal.empty()) t.parts_.push_back({Part::kText, std::move(literal)});
      literal.clear();
      t.parts_.push_back({role ? Part::kRole : Part::kContent, ""});
      contents += role ? 0 : 1;
      i += role ? 6 : 9;
    } else if (text[i] == '{' || text[i] == '}') {
      return absl::InvalidArgumentError(absl::StrCat(
          "chat template: unexpected '", std::string(1, text[i]), "' at byte ", i,
          " (placeholders are {role} and {content}; write {{ or }} for a literal brace), or use \"chatml\""));
    } else {
      literal += text[i++];
    }
  }
  if (!literal.empty()) t.parts_.push_back({Part::kText, std::move(literal)});
  if (contents != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template: must contain {content} exactly once (found ", contents, "), or be \"chatml\""));
  }
  return t;
}

absl::StatusOr<ChatTemplate> ChatTemplate::Load(const std::string& config_value, const std::string& model_dir) {
  if (!config_value.empty()) {
    auto t = Parse(config_value);
    if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat("http.chat_template: ", t.status().message()));
    return t;
  }
  const std::string path = model_dir + "/chat_template.txt";
  std::ifstream in(path, std::ios::binary);
  if (!in) return Parse("chatml");
  std::stringstream ss;
  ss << in.rdbuf();
  auto t = Parse(ss.str());
  if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", t.status().message()));
  t->source_ = "chat_template.txt";
  return t;
}

void ChatTemplate::Append(std::string& out, const std::string& role, const std::string* content) const {
  for (const auto& [part, text] : parts_) {
    switch (part) {
      case Part::kText:
        out += text;
        break;
      case Part::kRole:
        out += role;
        break;
      case Part::kContent:
        if (content == nullptr) return;  // the generation prompt stops here
        out += *content;
        break;
    }
  }
}

std::string ChatTemplate::Render(const std::vector<ChatMessage>& messages) const {
  std::string out;
  for (const ChatMessage& m : messages) Append(out, m.role, &m.content);
  Append(out, "assistant", nullptr);
  return out;
}

}  // namespace moeserve
