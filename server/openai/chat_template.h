// Turns chat messages into one prompt string. Debian packages no maintained C++ Jinja engine,
// so instead of Hugging Face's Jinja templates this supports a small, documented set:
//
//   "chatml"      the MiniCPM/DECO family's format (the default):
//                   <|im_start|>{role}\n{content}<|im_end|>\n   per message, then
//                   <|im_start|>assistant\n                      as the generation prompt
//   format string any text with {content} exactly once and {role} anywhere (or nowhere); it is
//                 applied to each message in turn, and the generation prompt is the template
//                 for role "assistant" cut just before {content}. "{{" and "}}" are literal
//                 braces. ChatML is exactly the format string
//                 "<|im_start|>{role}\n{content}<|im_end|>\n".
//
// Where the template comes from: config http.chat_template, else the model directory's
// chat_template.txt (its bytes, taken literally: a final newline is part of the template),
// else ChatML.
//
// Thread-safety: immutable after construction.
#ifndef MOESERVE_SERVER_OPENAI_CHAT_TEMPLATE_H_
#define MOESERVE_SERVER_OPENAI_CHAT_TEMPLATE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moeserve {

struct ChatMessage {
  std::string role;
  std::string content;
};

class ChatTemplate {
 public:
  // "chatml" (or empty) or a format string; InvalidArgument says what is wrong.
  static absl::StatusOr<ChatTemplate> Parse(const std::string& spec);
  // The template by the precedence above; errors name the config key or the file.
  static absl::StatusOr<ChatTemplate> Load(const std::string& config_value, const std::string& model_dir);

  // The messages in order, then the generation prompt.
  std::string Render(const std::vector<ChatMessage>& messages) const;
  // "chatml", "chat_template.txt" or "config" (for logs).
  const std::string& source() const { return source_; }

 private:
  // The template split at its placeholders: literal text, then a placeholder, alternating.
  enum class Part { kText, kRole, kContent };
  std::vector<std::pair<Part, std::string>> parts_;
  std::string source_;

  void Append(std::string& out, const std::string& role, const std::string* content) const;
};

}  // namespace moeserve

#endif  // MOESERVE_SERVER_OPENAI_CHAT_TEMPLATE_H_
