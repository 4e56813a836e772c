// The one-call subcommands: generate, complete, tokenize, info, health.
#include <iomanip>
#include <iostream>

#include "absl/flags/flag.h"
#include "clients/moectl/client_options.h"
#include "clients/moectl/commands.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "moeserve/v1/inference.grpc.pb.h"

ABSL_FLAG(std::string, service, "", "health: service name to check (\"\" = the whole server)");

namespace moeserve::moectl {
namespace {

// "finish: length, prompt 7, completion 32; mean active experts per MoE layer: 1:7.9 2:8.1"
void PrintSummary(const v1::GenerateResponse& last) {
  std::cerr << "finish: " << v1::FinishReason_Name(last.finish_reason()) << ", prompt " << last.prompt_tokens()
            << ", completion " << last.completion_tokens();
  if (!last.error().empty()) std::cerr << ", error: " << last.error();
  if (last.moe_stats().layers_size() > 0) {
    std::cerr << "; mean active experts per MoE layer:";
    for (const auto& l : last.moe_stats().layers()) {
      std::cerr << " " << l.layer() << ":" << std::fixed << std::setprecision(2) << l.mean_active_experts();
    }
  }
  std::cerr << "\n";
}

}  // namespace

int Generate() {
  auto request = RequestFromFlags();
  if (!request.ok()) {
    std::cerr << "error: " << request.status().message() << "\n";
    return 2;
  }
  auto channel = MakeChannel();
  auto stub = v1::Inference::NewStub(*channel);
  grpc::ClientContext context;
  PrepareContext(context);
  auto reader = stub->Generate(&context, *request);
  v1::GenerateResponse chunk, last;
  const bool json = absl::GetFlag(FLAGS_json);
  while (reader->Read(&chunk)) {
    if (json) {
      std::cout << ToJson(chunk) << "\n" << std::flush;
    } else {
      std::cout << chunk.text() << std::flush;
    }
    last = chunk;
  }
  const grpc::Status status = reader->Finish();
  if (!json) std::cout << "\n";
  if (!status.ok()) return ReportRpcError(status);
  if (!json) PrintSummary(last);
  return 0;
}

int Complete() {
  auto request = RequestFromFlags();
  if (!request.ok()) {
    std::cerr << "error: " << request.status().message() << "\n";
    return 2;
  }
  auto stub = v1::Inference::NewStub(*MakeChannel());
  grpc::ClientContext context;
  PrepareContext(context);
  v1::GenerateResponse response;
  const grpc::Status status = stub->Complete(&context, *request, &response);
  if (!status.ok()) return ReportRpcError(status);
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << ToJson(response) << "\n";
  } else {
    std::cout << response.text() << "\n";
    PrintSummary(response);
  }
  return 0;
}

int Tokenize() {
  auto request = RequestFromFlags();
  if (!request.ok() || !request->has_text()) {
    std::cerr << "error: tokenize needs --prompt TEXT\n";
    return 2;
  }
  auto stub = v1::Inference::NewStub(*MakeChannel());
  grpc::ClientContext context;
  PrepareContext(context);
  v1::TokenizeRequest r;
  r.set_text(request->text());
  r.set_add_bos(true);
  v1::TokenizeResponse response;
  const grpc::Status status = stub->Tokenize(&context, r, &response);
  if (!status.ok()) return ReportRpcError(status);
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << ToJson(response) << "\n";
  } else {
    for (int i = 0; i < response.token_ids_size(); ++i) {
      std::cout << response.token_ids(i) << "\t" << response.pieces(i) << "\n";
    }
  }
  return 0;
}

int Info() {
  auto stub = v1::Inference::NewStub(*MakeChannel());
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
  return 0;
}

int Health() {
  auto stub = grpc::health::v1::Health::NewStub(*MakeChannel());
  grpc::ClientContext context;
  PrepareContext(context);
  if (absl::GetFlag(FLAGS_timeout_s) <= 0) {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return ReportRpcError(status);
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << "{\"status\":\"" << name << "\"}\n";
  } else {
    std::cout << name << "\n";
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

}  // namespace moeserve::moectl
