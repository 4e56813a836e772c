#include "server/server_config.h"

#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/engine.h"
#include "common/status_macros.h"
#include "server/openai/chat_template.h"
#include "yaml-cpp/yaml.h"

namespace moeserve {
namespace {

// Describes where a node came from: "file.yaml line 4" or "--set".
std::string Where(const YAML::Node& node, const std::string& label) {
  const YAML::Mark mark = node.Mark();
  if (mark.line < 0) return "--set override";
  return absl::StrCat(label, " line ", mark.line + 1);
}

absl::Status KeyError(const std::string& path, const YAML::Node& node, const std::string& label,
                      const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("config key ", path, " (", Where(node, label), "): ", what));
}

// yaml-cpp reports conversion failures by exception; keep them inside this file.
template <typename T>
absl::Status Read(const YAML::Node& node, const std::string& path, const std::string& label, T* out) {
  try {
    *out = node.as<T>();
    return absl::OkStatus();
  } catch (const YAML::Exception&) {
    return KeyError(path, node, label, absl::StrCat("cannot read \"", YAML::Dump(node), "\" as the expected type"));
  }
}

using KeyReader = std::function<absl::Status(const YAML::Node&, const std::string&)>;

absl::Status ReadSection(const YAML::Node& section, const std::string& name, const std::string& label,
                         const std::map<std::string, KeyReader>& keys) {
  if (!section.IsMap()) return KeyError(name, section, label, "must be a mapping");
  for (const auto& kv : section) {
    const std::string key = kv.first.as<std::string>();
    const std::string path = absl::StrCat(name, ".", key);
    auto it = keys.find(key);
    if (it == keys.end()) return KeyError(path, kv.first, label, "unknown key");
    RETURN_IF_ERROR(it->second(kv.second, path));
  }
  return absl::OkStatus();
}

template <typename T>
KeyReader Field(T* out, const std::string& label, std::function<std::string(const T&)> check = nullptr) {
  return [out, label, check](const YAML::Node& node, const std::string& path) -> absl::Status {
    T value;
    RETURN_IF_ERROR(Read(node, path, label, &value));
    if (check) {
      const std::string problem = check(value);
      if (!problem.empty()) return KeyError(path, node, label, problem);
    }
    *out = value;
    return absl::OkStatus();
  };
}

// A mapping inside a section (server.tls, server.auth).
KeyReader Nested(const std::string& name, const std::string& label, std::map<std::string, KeyReader> keys) {
  return [name, label, keys](const YAML::Node& node, const std::string&) {
    return ReadSection(node, name, label, keys);
  };
}

// "a, b or c"
std::string Alternatives(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    absl::StrAppend(&out, i == 0 ? "" : (i + 1 == names.size() ? " or " : ", "), names[i]);
  }
  return out;
}

// A string key whose values name the members of an enum (or optional): parsed at load time,
// so nothing past the config compares strings. `canonical` values are the ones an error lists;
// the rest are accepted aliases.
template <typename T>
KeyReader OneOf(T* out, const std::string& label, std::vector<std::pair<std::string, T>> values, size_t canonical,
                std::function<std::string(const T&)> check = nullptr) {
  return [out, label, values, canonical, check](const YAML::Node& node, const std::string& path) -> absl::Status {
    std::string name;
    RETURN_IF_ERROR(Read(node, path, label, &name));
    std::vector<std::string> names;
    for (const auto& [n, v] : values) {
      if (names.size() < canonical) names.push_back(n);
      if (n != name) continue;
      if (check) {
        const std::string problem = check(v);
        if (!problem.empty()) return KeyError(path, node, label, problem);
      }
      *out = v;
      return absl::OkStatus();
    }
    return KeyError(path, node, label, absl::StrCat("must be ", Alternatives(names), ", got \"", name, "\""));
  };
}

std::function<std::string(const int&)> AtLeast(int lo) {
  return [lo](const int& v) { return v >= lo ? "" : absl::StrCat("must be >= ", lo, ", got ", v); };
}
std::function<std::string(const int&)> AtMost(std::function<std::string(const int&)> first, int hi) {
  return [first, hi](const int& v) { return v > hi ? absl::StrCat("must be <= ", hi, ", got ", v) : first(v); };
}
std::function<std::string(const int64_t&)> AtLeast64(int64_t lo) {
  return [lo](const int64_t& v) { return v >= lo ? "" : absl::StrCat("must be >= ", lo, ", got ", v); };
}

absl::Status Apply(const YAML::Node& root, const std::string& label, ServerConfig& c) {
  if (!root.IsDefined() || root.IsNull()) return absl::OkStatus();
  if (!root.IsMap()) return absl::InvalidArgumentError(absl::StrCat(label, ": top level must be a mapping"));
  const std::map<std::string, std::map<std::string, KeyReader>> sections = {
      {"server",
       {{"listen", Field(&c.server.listen, label)},
        {"port_file", Field(&c.server.port_file, label)},
        {"max_message_bytes", Field<int64_t>(&c.server.max_message_bytes, label, AtLeast64(1024))},
        {"grace_period_s", Field<double>(&c.server.grace_period_s, label,
                                         [](const double& v) { return v >= 0 ? "" : std::string("must be >= 0"); })},
        {"default_max_new_tokens", Field<int>(&c.server.default_max_new_tokens, label, AtLeast(1))},
        {"max_new_tokens_limit", Field<int>(&c.server.max_new_tokens_limit, label, AtLeast(1))},
        {"max_prompt_tokens", Field<int>(&c.server.max_prompt_tokens, label, AtLeast(0))},
        {"keepalive_time_s", Field<int>(&c.server.keepalive_time_s, label, AtLeast(1))},
        {"keepalive_timeout_s", Field<int>(&c.server.keepalive_timeout_s, label, AtLeast(1))},
        {"max_concurrent_per_client", Field<int>(&c.server.max_concurrent_per_client, label, AtLeast(0))},
        {"tls", Nested("server.tls", label,
                       {{"cert_file", Field(&c.server.tls.cert_file, label)},
                        {"key_file", Field(&c.server.tls.key_file, label)},
                        {"client_ca_file", Field(&c.server.tls.client_ca_file, label)}})},
        {"auth", Nested("server.auth", label,
                        {{"token_file", Field(&c.server.auth.token_file, label)},
                         {"token_env", Field(&c.server.auth.token_env, label)}})}}},
      {"model",
       {{"path", Field(&c.model.path, label)},
        {"dtype", OneOf<DType>(&c.model.dtype, label,
                               {{"f32", DType::kF32},
                                {"bf16", DType::kBF16},
                                {"f16", DType::kF16},
                                {"int8", DType::kI8},
                                {"fp32", DType::kF32},
                                {"float32", DType::kF32},
                                {"bfloat16", DType::kBF16},
                                {"fp16", DType::kF16},
                                {"float16", DType::kF16},
                                {"i8", DType::kI8}},
                               4)},
        {"kv_dtype",
         OneOf<std::optional<DType>>(&c.model.kv_dtype, label,
                                     {{"auto", std::nullopt}, {"f32", DType::kF32}, {"bf16", DType::kBF16}}, 3)},
        {"backend",
         OneOf<BackendChoice>(
             &c.model.backend, label,
             {{"auto", BackendChoice::kAuto}, {"cpu", BackendChoice::kCpu}, {"cuda", BackendChoice::kCuda}}, 3,
             [](const BackendChoice& b) {
               return b != BackendChoice::kCuda || CudaBackendAvailable()
                          ? std::string()
                          : std::string("cuda is not built in this binary (MOESERVE_CUDA=OFF); use cpu or auto");
             })},
        {"threads", Field<int>(&c.model.threads, label, AtLeast(0))},
        {"dense_experts", Field(&c.model.dense_experts, label)},
        {"expert_budget",
         Nested("model.expert_budget", label,
                {{"min_weight", Field<float>(&c.model.expert_budget.min_weight, label,
                                             [](const float& v) { return v >= 0 ? "" : std::string("must be >= 0"); })},
                 {"k_scale", Field<float>(&c.model.expert_budget.k_scale, label,
                                          [](const float& v) { return v > 0 ? "" : std::string("must be > 0"); })},
                 {"max_experts", Field<int>(&c.model.expert_budget.max_experts, label, AtLeast(0))}})}}},
      {"scheduler",
       {{"max_running", Field<int>(&c.scheduler.max_running, label, AtLeast(1))},
        {"max_batch_tokens", Field<int>(&c.scheduler.max_batch_tokens, label, AtLeast(1))},
        {"prefill_chunk", Field<int>(&c.scheduler.prefill_chunk, label, AtLeast(1))},
        {"max_waiting", Field<int>(&c.scheduler.max_waiting, label, AtLeast(0))},
        {"kv_block_size", Field<int>(&c.scheduler.kv_block_size, label, AtLeast(1))},
        {"kv_blocks", Field<int64_t>(&c.scheduler.kv_blocks, label, AtLeast64(0))},
        {"kv_memory_mb", Field<int64_t>(&c.scheduler.kv_memory_mb, label, AtLeast64(1))},
        {"prefix_cache", Field(&c.scheduler.prefix_cache, label)},
        {"speculative_max_draft", Field<int>(&c.scheduler.speculative_max_draft, label, AtMost(AtLeast(0), 64))},
        {"speculative_max_batch", Field<int>(&c.scheduler.speculative_max_batch, label, AtLeast(0))},
        {"debug_step_delay_ms", Field<int>(&c.scheduler.debug_step_delay_ms, label, AtLeast(0))},
        {"debug_nan_request_prefix", Field(&c.scheduler.debug_nan_request_prefix, label)}}},
      {"metrics", {{"listen", Field(&c.metrics.listen, label)}, {"per_expert", Field(&c.metrics.per_expert, label)}}},
      {"http",
       {{"listen", Field(&c.http.listen, label)},
        {"threads", Field<int>(&c.http.threads, label, AtLeast(1))},
        {"port_file", Field(&c.http.port_file, label)},
        {"served_model_name", Field(&c.http.served_model_name, label)},
        {"chat_template", Field<std::string>(&c.http.chat_template, label,
                                             [](const std::string& t) {
                                               const auto parsed = ChatTemplate::Parse(t);
                                               return parsed.ok() ? std::string()
                                                                  : std::string(parsed.status().message());
                                             })}}},
  };
  for (const auto& kv : root) {
    const std::string name = kv.first.as<std::string>();
    auto it = sections.find(name);
    if (it == sections.end()) return KeyError(name, kv.first, label, "unknown section");
    RETURN_IF_ERROR(ReadSection(kv.second, name, label, it->second));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& yaml_text, const std::string& label,
                                               const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": invalid YAML: ", e.what()));
  }
  ServerConfig config;
  try {  // a non-scalar key is yaml-cpp's exception; report it like any other bad key
    RETURN_IF_ERROR(Apply(root, label, config));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": ", e.what()));
  }
  for (const std::string& o : overrides) {
    const size_t eq = o.find('='), dot = o.find('.');
    if (eq == std::string::npos || dot == std::string::npos || dot > eq) {
      return absl::InvalidArgumentError(absl::StrCat("--set \"", o, "\": expected section.key=value"));
    }
    YAML::Node value;
    try {
      value = YAML::Load(o.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("--set \"", o, "\": invalid value: ", e.what()));
    }
    // Re-parse a one-key document (nested along the dotted path) so overrides get exactly
    // the file's validation.
    const std::vector<std::string> path = absl::StrSplit(o.substr(0, eq), '.');
    YAML::Node leaf = value.IsNull() ? YAML::Node("") : value;
    for (auto it = path.rbegin(); it != path.rend(); ++it) {
      YAML::Node parent;
      parent[*it] = leaf;
      leaf = parent;
    }
    try {
      RETURN_IF_ERROR(Apply(leaf, "--set", config));
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("--set \"", o, "\": ", e.what()));
    }
  }
  if (config.model.path.empty())
    return absl::InvalidArgumentError("config key model.path: required (the model directory)");
  const TlsSection& tls = config.server.tls;
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError("config keys server.tls.cert_file and server.tls.key_file: set both or neither");
  }
  if (!tls.client_ca_file.empty() && tls.cert_file.empty()) {
    return absl::InvalidArgumentError("config key server.tls.client_ca_file: mutual TLS needs server.tls.cert_file");
  }
  if (!config.server.auth.token_file.empty() && !config.server.auth.token_env.empty()) {
    return absl::InvalidArgumentError("config keys server.auth.token_file and server.auth.token_env: set at most one");
  }
  return config;
}

absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path, const std::vector<std::string>& overrides) {
  std::string text;
  if (!path.empty()) {
    std::ifstream in(path);
    if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open config file"));
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  return ParseServerConfig(text, path.empty() ? "(defaults)" : path, overrides);
}

}  // namespace moeserve
