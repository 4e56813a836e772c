// The moeserve.v1.Inference service on gRPC's callback API.
#ifndef MOESERVE_SERVER_INFERENCE_SERVICE_H_
#define MOESERVE_SERVER_INFERENCE_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <string>

#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "moeserve/v1/inference.grpc.pb.h"
#include "scheduler/scheduler.h"
#include "server/access_control.h"
#include "server/request_validation.h"
#include "server/server_config.h"

namespace moeserve {

class GenerationCall;

class InferenceService final : public v1::Inference::CallbackService {
 public:
  // All pointers must outlive the service.
  InferenceService(const ServerConfig* config, Engine* engine, const Tokenizer* tokenizer, Scheduler* scheduler,
                   AccessControl* access);

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(grpc::CallbackServerContext* context,
                                                           const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* context, const v1::GenerateRequest* request,
                                     v1::GenerateResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context, const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

 private:
  std::string RequestId(const v1::GenerateRequest& request);
  // Authenticates and reserves the client's slot; on refusal the call is rejected.
  void Admit(grpc::CallbackServerContext* context, const v1::GenerateRequest& request,
             const std::shared_ptr<GenerationCall>& call, const std::string& id);

  const ServerConfig* config_;
  Engine* engine_;
  const Tokenizer* tokenizer_;
  Scheduler* scheduler_;
  AccessControl* access_;
  ValidationLimits limits_;
  std::atomic<uint64_t> next_request_{1};
};

}  // namespace moeserve

#endif  // MOESERVE_SERVER_INFERENCE_SERVICE_H_
