#include "server/model_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <fstream>
#include <sstream>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace moeserve {
namespace {

constexpr char kServiceName[] = "moeserve.v1.Inference";

void SetHealth(grpc::Server* server, bool serving) {
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);  // overall ("") and every service
  health->SetServingStatus(kServiceName, serving);
}

absl::StatusOr<std::string> ReadFile(const std::string& key, const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(key, ": cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Plaintext, TLS, or mutual TLS (client certificates required and verified).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const TlsSection& tls) {
  if (tls.cert_file.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadFile("server.tls.cert_file", tls.cert_file));
  ASSIGN_OR_RETURN(pair.private_key, ReadFile("server.tls.key_file", tls.key_file));
  options.pem_key_cert_pairs.push_back(pair);
  if (!tls.client_ca_file.empty()) {
    ASSIGN_OR_RETURN(options.pem_root_certs, ReadFile("server.tls.client_ca_file", tls.client_ca_file));
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

// Write then rename, so a reader never sees a partial file.
void WritePortFile(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << port << "\n";
  std::rename(tmp.c_str(), path.c_str());
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelServer>> ModelServer::Start(const ServerConfig& config) {
  std::unique_ptr<ModelServer> s(new ModelServer());
  s->config_ = config;
  auto tokenizer = Tokenizer::Load(config.model.path);
  if (tokenizer.ok()) {
    s->tokenizer_ = std::move(*tokenizer);
  } else if (!absl::IsNotFound(tokenizer.status())) {
    return tokenizer.status();
  }
  EngineOptions options;
  options.model_dir = config.model.path;
  options.compute_dtype = config.model.dtype;
  options.backend = config.model.backend;
  options.num_threads = config.model.threads;
  options.dense_experts = config.model.dense_experts;
  options.kv_block_size = config.scheduler.kv_block_size;
  options.kv_num_blocks = config.scheduler.kv_blocks;
  options.kv_memory_mb = config.scheduler.kv_memory_mb;
  options.kv_dtype = config.model.kv_dtype;
  ASSIGN_OR_RETURN(s->engine_, Engine::Create(options));
  for (const std::string& w : s->engine_->info().warnings) std::cerr << "warning: " << w << "\n";

  // An empty metrics.listen turns metrics off entirely (no observers, no exposer).
  if (!config.metrics.listen.empty()) {
    ASSIGN_OR_RETURN(s->metrics_, ServingMetrics::Create(config, *s->engine_));
  }
  s->scheduler_ =
      std::make_unique<Scheduler>(s->engine_.get(), s->tokenizer_.get(), config.scheduler, s->metrics_.get());
  ASSIGN_OR_RETURN(s->access_, AccessControl::Create(config.server.auth, config.server.max_concurrent_per_client));
  s->service_ = std::make_unique<InferenceService>(&s->config_, s->engine_.get(), s->tokenizer_.get(),
                                                   s->scheduler_.get(), s->access_.get());
  ASSIGN_OR_RETURN(auto credentials, ServerCredentials(config.server.tls));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.server.listen, credentials, &s->port_);
  builder.RegisterService(s->service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.server.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(config.server.max_message_bytes));
  // Long streams: ping idle connections, and let clients ping us without being cut off.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, config.server.keepalive_time_s * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, config.server.keepalive_timeout_s * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config.server.listen));
  }
  SetHealth(s->server_.get(), false);
  // An empty http.listen turns the OpenAI-compatible API off.
  if (!config.http.listen.empty()) {
    ASSIGN_OR_RETURN(s->openai_, OpenAiApi::Start({&s->config_, &s->engine_->info(), s->tokenizer_.get(),
                                                   s->scheduler_.get(), s->access_.get()}));
  }
  RETURN_IF_ERROR(s->WarmUp());
  s->engine_->set_observer(s->metrics_.get());  // after warm-up: count only real traffic
  s->scheduler_->Start();
  SetHealth(s->server_.get(), true);
  if (s->openai_) s->openai_->set_serving(true);
  // The HTTP port file first: whoever waits for server.port_file finds both.
  if (s->openai_ && !config.http.port_file.empty()) WritePortFile(config.http.port_file, s->openai_->port());
  if (!config.server.port_file.empty()) WritePortFile(config.server.port_file, s->port_);
  return s;
}

absl::Status ModelServer::WarmUp() {
  // One small forward pass touches every weight page once and sizes the workspaces.
  const std::vector<int32_t> tokens = {static_cast<int32_t>(engine_->info().bos_token_id % engine_->info().vocab_size)};
  const std::vector<int32_t> blocks = {0};
  ForwardBatch batch;
  batch.chunks.push_back({tokens, 0, blocks, LogitsMode::kLast, ExpertBudget{}});
  ForwardOutput out;
  return engine_->Forward(batch, &out);
}

void ModelServer::Shutdown() {
  if (shut_down_ || server_ == nullptr) return;  // never started (Start failed part-way)
  shut_down_ = true;
  SetHealth(server_.get(), false);
  if (openai_) openai_->set_serving(false);
  scheduler_->Drain();
  const auto grace = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(config_.server.grace_period_s * 1000));
  while (!scheduler_->Idle() && std::chrono::steady_clock::now() < grace) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  scheduler_->AbortAll(FinishReason::kCancelled);
  // Let the final chunks reach their clients, then close.
  const auto flush = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!scheduler_->Idle() && std::chrono::steady_clock::now() < flush) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  openai_.reset();  // its workers have seen their final events; joins them
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  scheduler_->Stop();
}

ModelServer::~ModelServer() { Shutdown(); }

}  // namespace moeserve
