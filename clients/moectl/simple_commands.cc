// tokenize, info, health.
#include <iostream>

#include "absl/flags/flag.h"
#include "clients/moectl/args.h"
#include "clients/moectl/client_options.h"
#include "clients/moectl/commands.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "moeserve/v1/inference.grpc.pb.h"

ABSL_FLAG(std::string, service, "", "health: service to check (\"\" = the whole server, or moeserve.v1.Inference)");
ABSL_FLAG(bool, add_bos, true, "tokenize: prepend BOS");

namespace moeserve::moectl {

// Text mode: one "id<TAB>piece" line per token.
int Tokenize() {
  if (!FlagWasSet("prompt")) return ReportUsageError(absl::InvalidArgumentError("tokenize needs --prompt TEXT"));
  auto channel = MakeChannel();
  if (!channel.ok()) return ReportUsageError(channel.status());
  auto stub = v1::Inference::NewStub(*channel);
  grpc::ClientContext context;
  PrepareContext(context);
  v1::TokenizeRequest request;
  request.set_text(absl::GetFlag(FLAGS_prompt));
  request.set_add_bos(absl::GetFlag(FLAGS_add_bos));
  v1::TokenizeResponse response;
  const grpc::Status status = stub->Tokenize(&context, request, &response);
  if (!status.ok()) return ReportRpcError(status);
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << ToJson(response) << "\n";
  } else {
    for (int i = 0; i < response.token_ids_size(); ++i) {
      std::cout << response.token_ids(i) << "\t" << (i < response.pieces_size() ? response.pieces(i) : "") << "\n";
    }
  }
  return kExitOk;
}

int Info() {
  auto channel = MakeChannel();
  if (!channel.ok()) return ReportUsageError(channel.status());
  auto stub = v1::Inference::NewStub(*channel);
  grpc::ClientContext context;
  PrepareContext(context);
  v1::ModelInfo info;
  const grpc::Status status = stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  if (!status.ok()) return ReportRpcError(status);
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << ToJson(info) << "\n";
  } else {
    std::cout << info.DebugString();
  }
  return kExitOk;
}

// Exit 0 when SERVING, 1 otherwise (including when the server cannot be reached).
int Health() {
  auto channel = MakeChannel();
  if (!channel.ok()) return ReportUsageError(channel.status());
  auto stub = grpc::health::v1::Health::NewStub(*channel);
  grpc::ClientContext context;
  PrepareContext(context, /*default_timeout_s=*/5);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return ReportRpcError(status);
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << ToJson(response) << "\n";
  } else {
    std::cout << name << "\n";
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk : kExitRpcError;
}

}  // namespace moeserve::moectl
