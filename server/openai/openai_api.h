// The OpenAI-compatible HTTP front end: GET /v1/models, POST /v1/completions,
// POST /v1/chat/completions and GET /health on its own HttpListener (config section http).
// A peer of the gRPC InferenceService: the same auth and per-client limit (AccessControl), the
// same validation (ValidateGenerateRequest), the same scheduler and therefore the same metrics.
//
// Each generation holds one HTTP worker thread: the scheduler's events reach it through an
// EventQueue; with stream: true they are written as Server-Sent Events as they come, otherwise
// gathered into one response. A client that disconnects is noticed within ~20 ms
// (PeerConnection) or at the next failed write, and its request is aborted, which frees its KV
// blocks.
//
// Thread-safety: handlers run on the listener's workers; Start, set_serving and the destructor
// on the owner's thread. Every pointer in Services must outlive the OpenAiApi.
#ifndef MOESERVE_SERVER_OPENAI_OPENAI_API_H_
#define MOESERVE_SERVER_OPENAI_OPENAI_API_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/engine_info.h"
#include "engine/tokenizer.h"
#include "scheduler/scheduler.h"
#include "server/access_control.h"
#include "server/http_listener.h"
#include "server/openai/chat_template.h"
#include "server/openai/openai_request.h"
#include "server/request_validation.h"
#include "server/server_config.h"

namespace httplib {
struct Request;
struct Response;
class Server;
}  // namespace httplib

namespace moeserve {

class OpenAiApi {
 public:
  struct Services {
    const ServerConfig* config = nullptr;
    const EngineInfo* info = nullptr;
    const Tokenizer* tokenizer = nullptr;  // may be null: token-id prompts only
    Scheduler* scheduler = nullptr;
    AccessControl* access = nullptr;
  };

  // Listens on config.http.listen (HTTPS when server.tls has a certificate). /health answers
  // 503 until set_serving(true).
  static absl::StatusOr<std::unique_ptr<OpenAiApi>> Start(const Services& services);
  ~OpenAiApi();  // stops listening and joins the workers

  int port() const { return http_->port(); }
  const std::string& model_name() const { return model_name_; }
  void set_serving(bool serving) { serving_.store(serving); }

 private:
  OpenAiApi(const Services& services, ChatTemplate chat_template);
  void Routes(httplib::Server& server);
  void Generate(ApiKind kind, const httplib::Request& req, httplib::Response& res);
  void ListModels(const httplib::Request& req, httplib::Response& res) const;
  bool Authorized(const httplib::Request& req, httplib::Response& res) const;

  Services services_;
  ChatTemplate chat_template_;
  ValidationLimits limits_;
  std::string model_name_;
  int64_t created_ = 0;
  std::atomic<bool> serving_{false};
  std::atomic<uint64_t> next_id_{1};
  std::unique_ptr<HttpListener> http_;
};

}  // namespace moeserve

#endif  // MOESERVE_SERVER_OPENAI_OPENAI_API_H_
