// The server's YAML configuration (sections server, model, scheduler, metrics, http) with
// command-line overrides of single keys. Every error names the key path and, when the value
// came from the file, its line.
#ifndef MOESERVE_SERVER_SERVER_CONFIG_H_
#define MOESERVE_SERVER_SERVER_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/dtype.h"
#include "engine/engine_info.h"
#include "engine/expert_budget.h"
#include "scheduler/scheduler_options.h"

namespace moeserve {

struct TlsSection {
  std::string cert_file;       // PEM server certificate chain; empty = plaintext
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // PEM CA bundle; set = mutual TLS (client certificates required)
};

struct AuthSection {
  std::string token_file;  // bearer token in a file, or
  std::string token_env;   // in this environment variable; both empty = no authentication
};

struct ServerSection {
  std::string listen = "0.0.0.0:50051";
  std::string port_file;              // when set, the bound port is written here (port 0 in tests)
  int64_t max_message_bytes = 4 << 20;
  double grace_period_s = 30;         // drain time on SIGTERM before cancelling what is left
  int default_max_new_tokens = 256;
  int max_new_tokens_limit = 4096;
  int max_prompt_tokens = 0;          // 0 = the model's context
  int keepalive_time_s = 30;
  int keepalive_timeout_s = 10;
  int max_concurrent_per_client = 0;  // generations in flight per client address; 0 = no limit
  TlsSection tls;
  AuthSection auth;
};

struct ModelSection {
  std::string path;
  DType dtype = DType::kBF16;
  std::optional<DType> kv_dtype;  // "auto" (unset): DefaultKvDType in engine/kv_cache.h
  BackendChoice backend = BackendChoice::kAuto;
  int threads = 0;
  bool dense_experts = false;
  ExpertBudget expert_budget;  // server-wide default; requests may override each knob
};

struct MetricsSection {
  std::string listen = "127.0.0.1:9400";  // empty = metrics off (no endpoint, no counting)
  bool per_expert = true;
};

// The OpenAI-compatible HTTP API (server/openai/). Auth, TLS and per-client limits are the
// server section's.
struct HttpSection {
  std::string listen = "0.0.0.0:8000";  // empty = the HTTP API off
  int threads = 16;                     // workers; each open stream holds one
  std::string port_file;                // when set, the bound port is written here (port 0 in tests)
  std::string served_model_name;        // the `model` id clients use; empty = model.path's last part
  // "chatml" or a format string with {role} and {content} (see server/openai/chat_template.h);
  // empty = the model directory's chat_template.txt when present, else chatml.
  std::string chat_template;
};

struct ServerConfig {
  ServerSection server;
  ModelSection model;
  SchedulerOptions scheduler;
  MetricsSection metrics;
  HttpSection http;
};

// Parses YAML text (`label` names it in errors), then applies overrides "section.key=value"
// (the value is parsed as YAML). Unknown sections or keys are errors.
absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& yaml_text, const std::string& label,
                                               const std::vector<std::string>& overrides);

// Reads `path` (empty = defaults only) and applies `overrides`.
absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path, const std::vector<std::string>& overrides);

}  // namespace moeserve

#endif  // MOESERVE_SERVER_SERVER_CONFIG_H_
