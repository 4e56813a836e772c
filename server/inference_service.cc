#include "server/inference_service.h"

#include "absl/strings/str_cat.h"
#include "server/generation_call.h"
#include "server/status_mapping.h"

namespace moeserve {

InferenceService::InferenceService(const ServerConfig* config, Engine* engine, const Tokenizer* tokenizer,
                                   Scheduler* scheduler, AccessControl* access)
    : config_(config), engine_(engine), tokenizer_(tokenizer), scheduler_(scheduler), access_(access),
      limits_(MakeValidationLimits(*config, engine->info())) {}

std::string InferenceService::RequestId(const v1::GenerateRequest& request) {
  if (!request.request_id().empty()) return request.request_id();
  return absl::StrCat("req-", next_request_.fetch_add(1));
}

void InferenceService::Admit(grpc::CallbackServerContext* context, const v1::GenerateRequest& request,
                             const std::shared_ptr<GenerationCall>& call, const std::string& id) {
  if (grpc::Status auth = access_->Authenticate(*context); !auth.ok()) {
    call->Reject(auth);
    return;
  }
  auto params = ValidateGenerateRequest(request, tokenizer_, limits_);
  if (!params.ok()) {
    call->Reject(ToGrpcStatus(params.status()));
    return;
  }
  const std::string client = AccessControl::ClientKey(*context);
  if (grpc::Status slot = access_->Acquire(client); !slot.ok()) {
    call->Reject(slot);
    return;
  }
  call->set_on_finish([access = access_, client] { access->Release(client); });
  params->request_id = id;
  call->Start(call, std::move(*params));
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Generate(grpc::CallbackServerContext* context,
                                                                           const v1::GenerateRequest* request) {
  const std::string id = RequestId(*request);
  auto call = std::make_shared<GenerationCall>(GenerationCall::Mode::kStream, scheduler_, context, id);
  auto* reactor = GenerationCall::MakeStreamReactor(call);
  Admit(context, *request, call, id);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Complete(grpc::CallbackServerContext* context,
                                                     const v1::GenerateRequest* request,
                                                     v1::GenerateResponse* response) {
  const std::string id = RequestId(*request);
  auto call = std::make_shared<GenerationCall>(GenerationCall::Mode::kUnary, scheduler_, context, id);
  auto* reactor = GenerationCall::MakeUnaryReactor(call, response);
  response->set_request_id(id);
  Admit(context, *request, call, id);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (grpc::Status auth = access_->Authenticate(*context); !auth.ok()) {
    reactor->Finish(auth);
    return reactor;
  }
  if (tokenizer_ == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this model has no tokenizer"));
    return reactor;
  }
  auto ids = tokenizer_->Encode(request->text(), request->add_bos());
  if (!ids.ok()) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message()))));
    return reactor;
  }
  for (int32_t id : *ids) {
    response->add_token_ids(id);
    response->add_pieces(tokenizer_->Piece(id));
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest*, v1::ModelInfo* info) {
  if (grpc::Status auth = access_->Authenticate(*context); !auth.ok()) {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(auth);
    return reactor;
  }
  const EngineInfo& e = engine_->info();
  info->set_model_path(config_->model.path);
  info->set_architecture(e.architecture);
  info->set_router_kind(e.router);
  info->set_num_layers(static_cast<uint32_t>(e.num_layers));
  info->set_num_moe_layers(static_cast<uint32_t>(e.moe_layers.size()));
  info->set_num_experts(static_cast<uint32_t>(e.num_experts));
  info->set_expert_width(static_cast<uint32_t>(e.expert_width));
  info->set_active_expert_budget(static_cast<uint32_t>(e.active_expert_budget));
  info->set_total_parameters(e.total_parameters);
  info->set_dtype(std::string(ComputeDTypeName(e.dtype)));
  info->set_backend(BackendName(e.backend));
  info->set_max_context(static_cast<uint32_t>(e.max_context));
  info->set_vocab_size(static_cast<uint32_t>(e.vocab_size));
  info->set_has_tokenizer(tokenizer_ != nullptr);
  const SchedulerStats s = scheduler_->GetStats();
  info->set_kv_blocks_total(static_cast<uint32_t>(s.kv_blocks_total));
  info->set_kv_blocks_free(static_cast<uint32_t>(s.kv_blocks_free));
  info->set_kv_block_size(static_cast<uint32_t>(e.kv.block_size));
  info->set_kv_dtype(std::string(ComputeDTypeName(e.kv.dtype)));
  info->set_num_requests_running(s.running);
  info->set_num_requests_waiting(s.waiting);
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace moeserve
