// generate (server streaming) and complete (unary).
//   text mode: the completion on stdout (generate: each chunk as it arrives, flushed), then on
//              stderr "finish_reason: ... prompt_tokens: ... completion_tokens: ..." and the mean
//              active experts per MoE layer.
//   --json:    one JSON object per chunk (generate) or one for the response (complete).
// A completion that ends with finish_reason ERROR exits 1 like an RPC error.
#include <iomanip>
#include <iostream>
#include <sstream>

#include "absl/flags/flag.h"
#include "clients/moectl/client_options.h"
#include "clients/moectl/commands.h"
#include "moeserve/v1/inference.grpc.pb.h"

namespace moeserve::moectl {
namespace {

// Prints the summary of the last chunk to stderr; returns the exit status it implies.
int Summarise(const v1::GenerateResponse& last, bool json) {
  const bool failed = last.finish_reason() == v1::ERROR;
  if (!json) {
    std::ostringstream line;
    line << "finish_reason: " << v1::FinishReason_Name(last.finish_reason())
         << "  prompt_tokens: " << last.prompt_tokens() << "  completion_tokens: " << last.completion_tokens()
         << "  request_id: " << last.request_id() << "\n";
    if (last.moe_stats().layers_size() > 0) {
      line << "mean active experts per MoE layer:";
      for (const v1::LayerMoeStats& l : last.moe_stats().layers()) {
        line << " " << l.layer() << ":" << std::fixed << std::setprecision(2) << l.mean_active_experts() << "/"
             << l.num_experts();
      }
      line << "\n";
    }
    std::cerr << line.str();
  }
  if (failed) std::cerr << "error: finish_reason ERROR: " << last.error() << "\n";
  return failed ? kExitRpcError : kExitOk;
}

}  // namespace

int Generate() {
  auto request = RequestFromFlags();
  if (!request.ok()) return ReportUsageError(request.status());
  auto channel = MakeChannel();
  if (!channel.ok()) return ReportUsageError(channel.status());
  auto stub = v1::Inference::NewStub(*channel);
  grpc::ClientContext context;
  PrepareContext(context);
  const bool json = absl::GetFlag(FLAGS_json);
  auto reader = stub->Generate(&context, *request);
  v1::GenerateResponse chunk, last;
  bool any = false;
  char last_char = '\n';
  while (reader->Read(&chunk)) {
    if (json) {
      std::cout << ToJson(chunk) << "\n" << std::flush;
    } else if (!chunk.text().empty()) {
      std::cout << chunk.text() << std::flush;
      last_char = chunk.text().back();
    }
    any = true;
    last = std::move(chunk);
  }
  if (last_char != '\n') std::cout << "\n" << std::flush;
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return ReportRpcError(status);
  if (!any) {
    std::cerr << "error: the stream ended without a chunk\n";
    return kExitRpcError;
  }
  return Summarise(last, json);
}

int Complete() {
  auto request = RequestFromFlags();
  if (!request.ok()) return ReportUsageError(request.status());
  auto channel = MakeChannel();
  if (!channel.ok()) return ReportUsageError(channel.status());
  auto stub = v1::Inference::NewStub(*channel);
  grpc::ClientContext context;
  PrepareContext(context);
  v1::GenerateResponse response;
  const grpc::Status status = stub->Complete(&context, *request, &response);
  if (!status.ok()) return ReportRpcError(status);
  const bool json = absl::GetFlag(FLAGS_json);
  if (json) {
    std::cout << ToJson(response) << "\n";
  } else {
    std::cout << response.text();
    if (response.text().empty() || response.text().back() != '\n') std::cout << "\n";
  }
  std::cout << std::flush;
  return Summarise(response, json);
}

}  // namespace moeserve::moectl
