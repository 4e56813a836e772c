#include "clients/moectl/client_options.h"

#include <google/protobuf/util/json_util.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "clients/moectl/args.h"

// Connection.
ABSL_FLAG(std::string, target, "localhost:50051", "server address host:port (or dns:///name:port)");
ABSL_FLAG(bool, json, false, "machine-readable output: one JSON object per chunk (generate), one otherwise");
ABSL_FLAG(double, timeout_s, 0, "deadline of each call in seconds (0 = none; health defaults to 5)");
ABSL_FLAG(bool, tls, false, "connect with TLS (else plaintext)");
ABSL_FLAG(std::string, ca_cert, "", "TLS: PEM CA bundle that verifies the server (empty = system roots)");
ABSL_FLAG(std::string, client_cert, "", "TLS: PEM client certificate chain (mutual TLS; needs --client_key)");
ABSL_FLAG(std::string, client_key, "", "TLS: PEM client private key (mutual TLS; needs --client_cert)");
ABSL_FLAG(std::string, tls_server_name, "", "TLS: name to verify in the server certificate instead of the host");
ABSL_FLAG(std::string, token_file, "", "file holding a bearer token (else $MOESERVE_TOKEN, if set)");

// Request (generate, complete; --prompt also tokenize).
ABSL_FLAG(std::string, prompt, "", "prompt text (the server tokenizes it and prepends BOS)");
ABSL_FLAG(std::string, token_ids, "", "prompt as comma-separated token ids, used verbatim");
ABSL_FLAG(int, max_new_tokens, 0, "tokens to generate (0 = the server's default)");
ABSL_FLAG(double, temperature, 0, "sampling temperature (0 = greedy)");
ABSL_FLAG(int, top_k, 0, "top-k (0 = off)");
ABSL_FLAG(double, top_p, 1, "top-p in (0, 1] (sent only when given)");
ABSL_FLAG(double, min_p, 0, "min-p in [0, 1] (0 = off)");
ABSL_FLAG(double, repetition_penalty, 1, "repetition penalty > 0 (sent only when given)");
ABSL_FLAG(double, presence_penalty, 0, "presence penalty in [-2, 2]");
ABSL_FLAG(double, frequency_penalty, 0, "frequency penalty in [-2, 2]");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed (unset = random); bench: seed of the workload (unset = 0)");
ABSL_FLAG(std::vector<std::string>, stop, {}, "stop string; repeatable, or a comma list (\\, = literal comma)");
ABSL_FLAG(std::string, stop_token_ids, "", "comma-separated extra stop token ids");
ABSL_FLAG(bool, ignore_eos, false, "do not stop at the model's end-of-sequence tokens");
ABSL_FLAG(int, logprobs, 0, "return each token's logprob and this many top alternatives");
ABSL_FLAG(int, priority, 0, "request priority (higher runs first)");
ABSL_FLAG(std::string, request_id, "", "request id to send (empty = the server makes one)");

namespace moeserve::moectl {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read \"", path, "\""));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status ParseIds(const std::string& flag, const std::string& text, google::protobuf::RepeatedField<int32_t>* out) {
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": \"", part, "\" is not a token id"));
    }
    out->Add(id);
  }
  return absl::OkStatus();
}

// The bearer token, read once by MakeChannel (before any call, so threads only read it).
std::string& BearerToken() {
  static std::string token;
  return token;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel() {
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    auto text = ReadFile("token_file", absl::GetFlag(FLAGS_token_file));
    if (!text.ok()) return text.status();
    BearerToken() = std::string(absl::StripAsciiWhitespace(*text));
  } else if (const char* env = std::getenv("MOESERVE_TOKEN")) {
    BearerToken() = env;
  }
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetLoadBalancingPolicyName("round_robin");  // spreads over every address of a dns:/// target
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  const bool tls = absl::GetFlag(FLAGS_tls);
  const std::string ca = absl::GetFlag(FLAGS_ca_cert), cert = absl::GetFlag(FLAGS_client_cert),
                    key = absl::GetFlag(FLAGS_client_key), server_name = absl::GetFlag(FLAGS_tls_server_name);
  if (!tls && !(ca.empty() && cert.empty() && key.empty() && server_name.empty())) {
    return absl::InvalidArgumentError("--ca_cert, --client_cert, --client_key and --tls_server_name need --tls");
  }
  if (tls) {
    if (cert.empty() != key.empty()) return absl::InvalidArgumentError("--client_cert and --client_key go together");
    grpc::SslCredentialsOptions options;
    if (!ca.empty()) {
      auto pem = ReadFile("ca_cert", ca);
      if (!pem.ok()) return pem.status();
      options.pem_root_certs = *pem;
    }
    if (!cert.empty()) {
      auto chain = ReadFile("client_cert", cert);
      if (!chain.ok()) return chain.status();
      auto private_key = ReadFile("client_key", key);
      if (!private_key.ok()) return private_key.status();
      options.pem_cert_chain = *chain;
      options.pem_private_key = *private_key;
    }
    if (!server_name.empty()) args.SetSslTargetNameOverride(server_name);
    credentials = grpc::SslCredentials(options);
  }
  return grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target), credentials, args);
}

void PrepareContext(grpc::ClientContext& context, double default_timeout_s) {
  double timeout = absl::GetFlag(FLAGS_timeout_s);
  if (timeout <= 0) timeout = default_timeout_s;
  if (timeout > 0) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::microseconds(static_cast<int64_t>(timeout * 1e6)));
  }
  if (!BearerToken().empty()) context.AddMetadata("authorization", "Bearer " + BearerToken());
}

absl::StatusOr<v1::GenerateRequest> RequestFromFlags() {
  v1::GenerateRequest r;
  const std::string prompt = absl::GetFlag(FLAGS_prompt), ids = absl::GetFlag(FLAGS_token_ids);
  if (FlagWasSet("prompt") == FlagWasSet("token_ids")) {
    return absl::InvalidArgumentError("give exactly one of --prompt and --token_ids");
  }
  if (FlagWasSet("prompt")) {
    r.set_text(prompt);
  } else {
    if (absl::Status s = ParseIds("token_ids", ids, r.mutable_token_ids()->mutable_ids()); !s.ok()) return s;
  }
  if (absl::GetFlag(FLAGS_max_new_tokens) < 0) return absl::InvalidArgumentError("--max_new_tokens must be >= 0");
  if (absl::GetFlag(FLAGS_logprobs) < 0) return absl::InvalidArgumentError("--logprobs must be >= 0");
  r.set_max_new_tokens(static_cast<uint32_t>(absl::GetFlag(FLAGS_max_new_tokens)));
  // Range checks of the sampling fields are the server's (INVALID_ARGUMENT naming the field).
  v1::SamplingParams* s = r.mutable_sampling();
  s->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  s->set_top_k(absl::GetFlag(FLAGS_top_k));
  if (FlagWasSet("top_p")) s->set_top_p(static_cast<float>(absl::GetFlag(FLAGS_top_p)));
  s->set_min_p(static_cast<float>(absl::GetFlag(FLAGS_min_p)));
  if (FlagWasSet("repetition_penalty")) {
    s->set_repetition_penalty(static_cast<float>(absl::GetFlag(FLAGS_repetition_penalty)));
  }
  s->set_presence_penalty(static_cast<float>(absl::GetFlag(FLAGS_presence_penalty)));
  s->set_frequency_penalty(static_cast<float>(absl::GetFlag(FLAGS_frequency_penalty)));
  if (FlagWasSet("seed")) s->set_seed(absl::GetFlag(FLAGS_seed));
  for (const std::string& stop : absl::GetFlag(FLAGS_stop)) r.add_stop(stop);
  if (absl::Status st = ParseIds("stop_token_ids", absl::GetFlag(FLAGS_stop_token_ids), r.mutable_stop_token_ids());
      !st.ok()) {
    return st;
  }
  r.set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  r.set_logprobs(static_cast<uint32_t>(absl::GetFlag(FLAGS_logprobs)));
  r.set_request_id(absl::GetFlag(FLAGS_request_id));
  r.set_priority(absl::GetFlag(FLAGS_priority));
  return r;
}

const char* StatusCodeName(grpc::StatusCode code) {
  static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                 "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                 "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int c = static_cast<int>(code);
  return c >= 0 && c <= 16 ? kNames[c] : "UNKNOWN";
}

int ReportRpcError(const grpc::Status& status) {
  std::cerr << "error: " << StatusCodeName(status.error_code()) << ": " << status.error_message() << "\n";
  return kExitRpcError;
}

int ReportUsageError(const absl::Status& status) {
  std::cerr << "error: " << status.message() << "\n";
  return kExitUsage;
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

}  // namespace moeserve::moectl
