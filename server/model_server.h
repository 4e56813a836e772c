// Owns everything a running moeserve needs: engine, tokenizer, scheduler, gRPC server with
// the Inference, health and reflection services, and the OpenAI-compatible HTTP API. Health is NOT_SERVING until the model is
// loaded and warmed up, and again while draining.
#ifndef MOESERVE_SERVER_MODEL_SERVER_H_
#define MOESERVE_SERVER_MODEL_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "scheduler/scheduler.h"
#include "server/inference_service.h"
#include "server/openai/openai_api.h"
#include "server/serving_metrics.h"
#include "server/server_config.h"

namespace moeserve {

class ModelServer {
 public:
  // Loads the model, warms it up, and starts listening.
  static absl::StatusOr<std::unique_ptr<ModelServer>> Start(const ServerConfig& config);
  ~ModelServer();

  int port() const { return port_; }
  SchedulerStats scheduler_stats() const { return scheduler_->GetStats(); }
  int metrics_port() const { return metrics_ ? metrics_->port() : 0; }
  // The OpenAI-compatible HTTP API's port; 0 when http.listen is empty.
  int http_port() const { return openai_ ? openai_->port() : 0; }

  // Graceful shutdown: NOT_SERVING, refuse new requests (UNAVAILABLE), let in-flight ones
  // finish for up to the grace period, cancel the rest, stop the server.
  void Shutdown();

 private:
  ModelServer() = default;
  absl::Status WarmUp();

  ServerConfig config_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ServingMetrics> metrics_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<AccessControl> access_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<OpenAiApi> openai_;  // after scheduler_ and access_: stopped before them
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace moeserve

#endif  // MOESERVE_SERVER_MODEL_SERVER_H_
