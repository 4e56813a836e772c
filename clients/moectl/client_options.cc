#include "clients/moectl/client_options.h"

#include <google/protobuf/util/json_util.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

ABSL_FLAG(std::string, target, "localhost:50051", "server address host:port (or dns:///name:port)");
ABSL_FLAG(bool, json, false, "machine-readable output (one JSON object per line)");
ABSL_FLAG(double, timeout_s, 0, "deadline of the call in seconds (0 = none)");
ABSL_FLAG(bool, tls, false, "connect with TLS");
ABSL_FLAG(std::string, ca_cert, "", "PEM CA bundle to verify the server (TLS)");
ABSL_FLAG(std::string, client_cert, "", "PEM client certificate (mutual TLS)");
ABSL_FLAG(std::string, client_key, "", "PEM client private key (mutual TLS)");
ABSL_FLAG(std::string, token_file, "", "file holding the bearer token (else $MOESERVE_TOKEN)");

ABSL_FLAG(std::string, prompt, "", "prompt text");
ABSL_FLAG(std::string, token_ids, "", "prompt as comma-separated token ids");
ABSL_FLAG(int, max_new_tokens, 0, "tokens to generate (0 = server default)");
ABSL_FLAG(double, temperature, 0, "sampling temperature (0 = greedy)");
ABSL_FLAG(int, top_k, 0, "top-k (0 = off)");
ABSL_FLAG(double, top_p, 1, "top-p (1 = off)");
ABSL_FLAG(double, min_p, 0, "min-p (0 = off)");
ABSL_FLAG(int64_t, seed, -1, "sampling seed (-1 = random)");
ABSL_FLAG(std::vector<std::string>, stop, {}, "comma-separated stop strings");
ABSL_FLAG(int, logprobs, 0, "return logprobs with this many alternatives");
ABSL_FLAG(int, priority, 0, "request priority (higher first)");
ABSL_FLAG(bool, ignore_eos, false, "do not stop at end-of-sequence tokens");

namespace moeserve::moectl {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetLoadBalancingPolicyName("round_robin");  // spreads over every address of a dns:/// target
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (absl::GetFlag(FLAGS_tls)) {
    grpc::SslCredentialsOptions tls;
    if (!absl::GetFlag(FLAGS_ca_cert).empty()) tls.pem_root_certs = ReadFile(absl::GetFlag(FLAGS_ca_cert));
    if (!absl::GetFlag(FLAGS_client_cert).empty()) {
      tls.pem_cert_chain = ReadFile(absl::GetFlag(FLAGS_client_cert));
      tls.pem_private_key = ReadFile(absl::GetFlag(FLAGS_client_key));
    }
    credentials = grpc::SslCredentials(tls);
  }
  return grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target), credentials, args);
}

void PrepareContext(grpc::ClientContext& context) {
  const double timeout = absl::GetFlag(FLAGS_timeout_s);
  if (timeout > 0) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::microseconds(static_cast<int64_t>(timeout * 1e6)));
  }
  std::string token;
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    token = std::string(absl::StripAsciiWhitespace(ReadFile(absl::GetFlag(FLAGS_token_file))));
  } else if (const char* env = std::getenv("MOESERVE_TOKEN")) {
    token = env;
  }
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
}

absl::StatusOr<v1::GenerateRequest> RequestFromFlags() {
  v1::GenerateRequest r;
  const std::string prompt = absl::GetFlag(FLAGS_prompt), ids = absl::GetFlag(FLAGS_token_ids);
  if (prompt.empty() == ids.empty()) return absl::InvalidArgumentError("give exactly one of --prompt and --token_ids");
  if (!prompt.empty()) {
    r.set_text(prompt);
  } else {
    for (absl::string_view part : absl::StrSplit(ids, ',', absl::SkipWhitespace())) {
      int32_t id;
      if (!absl::SimpleAtoi(part, &id)) return absl::InvalidArgumentError(absl::StrCat("--token_ids: bad id \"", part, "\""));
      r.mutable_token_ids()->add_ids(id);
    }
  }
  if (absl::GetFlag(FLAGS_max_new_tokens) < 0) return absl::InvalidArgumentError("--max_new_tokens must be >= 0");
  r.set_max_new_tokens(absl::GetFlag(FLAGS_max_new_tokens));
  v1::SamplingParams* s = r.mutable_sampling();
  s->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  s->set_top_k(absl::GetFlag(FLAGS_top_k));
  if (absl::GetFlag(FLAGS_top_p) != 1.0) s->set_top_p(static_cast<float>(absl::GetFlag(FLAGS_top_p)));
  s->set_min_p(static_cast<float>(absl::GetFlag(FLAGS_min_p)));
  if (absl::GetFlag(FLAGS_seed) >= 0) s->set_seed(static_cast<uint64_t>(absl::GetFlag(FLAGS_seed)));
  for (const std::string& stop : absl::GetFlag(FLAGS_stop)) r.add_stop(stop);
  r.set_logprobs(static_cast<uint32_t>(std::max(0, absl::GetFlag(FLAGS_logprobs))));
  r.set_priority(absl::GetFlag(FLAGS_priority));
  r.set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  return r;
}

int ReportRpcError(const grpc::Status& status) {
  static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                 "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                 "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int code = static_cast<int>(status.error_code());
  std::cerr << "error: " << (code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN") << ": " << status.error_message()
            << "\n";
  return 1;
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

}  // namespace moeserve::moectl
