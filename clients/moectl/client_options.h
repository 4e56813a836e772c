// Flags and connection set-up shared by every moectl subcommand.
#ifndef MOESERVE_CLIENTS_MOECTL_CLIENT_OPTIONS_H_
#define MOESERVE_CLIENTS_MOECTL_CLIENT_OPTIONS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "moeserve/v1/inference.pb.h"

ABSL_DECLARE_FLAG(std::string, target);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(double, timeout_s);
ABSL_DECLARE_FLAG(std::string, prompt);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(std::vector<std::string>, stop);

namespace moeserve::moectl {

// Exit statuses.
inline constexpr int kExitOk = 0;
inline constexpr int kExitRpcError = 1;
inline constexpr int kExitUsage = 2;

// A channel to --target: TLS with --tls (--ca_cert, --client_cert, --client_key,
// --tls_server_name), plaintext otherwise. Unreadable files are usage errors.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel();

// Applies --timeout_s (or default_timeout_s when --timeout_s is 0 and it is > 0) and the bearer
// token of --token_file / $MOESERVE_TOKEN (read by MakeChannel), if any.
void PrepareContext(grpc::ClientContext& context, double default_timeout_s = 0);

// The GenerateRequest described by the request flags (--prompt/--token_ids, sampling, stops).
absl::StatusOr<v1::GenerateRequest> RequestFromFlags();

// "OK", "INVALID_ARGUMENT", ...
const char* StatusCodeName(grpc::StatusCode code);

// Prints "error: CODE: message" to stderr; returns kExitRpcError.
int ReportRpcError(const grpc::Status& status);

// Prints "error: message" to stderr; returns kExitUsage.
int ReportUsageError(const absl::Status& status);

// A message as one line of JSON (protobuf's JSON mapping, proto field names, defaults shown).
std::string ToJson(const google::protobuf::Message& message);

}  // namespace moeserve::moectl

#endif  // MOESERVE_CLIENTS_MOECTL_CLIENT_OPTIONS_H_
