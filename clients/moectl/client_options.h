// Flags and connection set-up shared by every moectl subcommand.
#ifndef MOESERVE_CLIENTS_MOECTL_CLIENT_OPTIONS_H_
#define MOESERVE_CLIENTS_MOECTL_CLIENT_OPTIONS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "moeserve/v1/inference.pb.h"

ABSL_DECLARE_FLAG(std::string, target);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(double, timeout_s);

namespace moeserve::moectl {

// A channel to --target, plaintext or TLS (--tls, --ca_cert, --client_cert, --client_key).
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel();

// A context with --timeout_s and the bearer token of --token_file / $MOESERVE_TOKEN, if any.
void PrepareContext(grpc::ClientContext& context);

// The GenerateRequest described by the request flags (--prompt/--token_ids, sampling, stops).
absl::StatusOr<v1::GenerateRequest> RequestFromFlags();

// Prints "error: CODE: message" and returns exit status 1.
int ReportRpcError(const grpc::Status& status);

// A message as one line of JSON (protobuf's JSON mapping).
std::string ToJson(const google::protobuf::Message& message);

}  // namespace moeserve::moectl

#endif  // MOESERVE_CLIENTS_MOECTL_CLIENT_OPTIONS_H_
