#include "server/openai/openai_api.h"

#include <httplib.h>

#include <chrono>
#include <csignal>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/openai/api_error.h"
#include "server/openai/event_queue.h"
#include "server/openai/openai_response.h"
#include "server/openai/peer_connection.h"

namespace moeserve {
namespace {

using nlohmann::json;

// How often a waiting worker checks whether its client is still there.
constexpr std::chrono::milliseconds kPollInterval{20};

void SendJson(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(Dump(body), "application/json");
}

void SendError(httplib::Response& res, const ApiError& e) {
  res.status = e.http_status;
  res.set_content(e.ToJson(), "application/json");
}

// The per-client key in AccessControl's form for gRPC peers ("ipv4:1.2.3.4", "ipv6:[::1]"), so
// that one client's gRPC and HTTP generations count against the same limit.
std::string ClientKey(const httplib::Request& req) {
  const std::string& a = req.remote_addr;
  return a.find(':') == std::string::npos ? absl::StrCat("ipv4:", a) : absl::StrCat("ipv6:[", a, "]");
}

// What became of a request that did not finish normally, as an API error.
ApiError FailedFinish(const TokenEvent& e) {
  switch (e.finish) {
    case FinishReason::kCancelled:
      return ToApiError(absl::UnavailableError("request cancelled: the server is shutting down"));
    case FinishReason::kDeadline:
      return ToApiError(absl::DeadlineExceededError("deadline exceeded"));
    default:
      return ToApiError(absl::InternalError(e.error.empty() ? "generation failed" : e.error));
  }
}

// One admitted generation, shared by the handler, the content provider and its releaser (all on
// the same worker thread, one after another).
struct Generation {
  Scheduler* scheduler = nullptr;
  AccessControl* access = nullptr;
  std::string client;
  std::shared_ptr<EventQueue> queue = std::make_shared<EventQueue>();
  uint64_t handle = 0;
  std::unique_ptr<PeerConnection> peer;
  OpenAiRequest request;
  std::unique_ptr<ResponseBuilder> builder;
  bool finished = false;  // the final event arrived, or the request was aborted
  bool released = false;  // the per-client slot was given back
  bool role_sent = false;
  // No tokenizer: token-id completions carry no text, so every event with tokens is a chunk
  // (empty text) rather than none until the end.
  bool textless = false;

  void Release() {
    if (released) return;
    released = true;
    access->Release(client);
  }
  // The client is gone: end the request now (frees its KV blocks) and give back the slot.
  void Cancel() {
    if (!finished) {
      finished = true;
      scheduler->Abort(handle, FinishReason::kCancelled);
    }
    Release();
  }
};

// One step of a stream: waits for events, writes them as SSE. Returns false to stop.
bool StreamStep(Generation& g, httplib::DataSink& sink) {
  std::string out;
  if (g.request.kind == ApiKind::kChat && !g.role_sent) {
    g.role_sent = true;
    out = SseEvent(g.builder->RoleChunk());
  } else {
    std::optional<TokenEvent> e = g.queue->Take(kPollInterval);
    if (!e) {
      if (!g.peer->Closed()) return true;
      g.Cancel();
      return false;
    }
    if (!e->text.empty() || !e->logprobs.empty() || (g.textless && !e->token_ids.empty())) {
      out += SseEvent(g.builder->DeltaChunk(*e));
    }
    if (e->finish != FinishReason::kNone) {
      g.finished = true;
      g.Release();
      if (ResponseBuilder::FinishReasonName(e->finish) != nullptr) {
        out += SseEvent(g.builder->FinishChunk(*e));
        if (g.request.include_usage) out += SseEvent(g.builder->UsageChunk(*e));
        out += "data: [DONE]\n\n";
      } else {
        out += SseEvent(json::parse(FailedFinish(*e).ToJson()));
      }
      const bool ok = sink.write(out.data(), out.size());
      if (ok) sink.done();
      return ok;
    }
    if (out.empty()) return true;
  }
  if (!sink.write(out.data(), out.size())) {
    g.Cancel();
    return false;
  }
  return true;
}

}  // namespace

OpenAiApi::OpenAiApi(const Services& services, ChatTemplate chat_template)
    : services_(services),
      chat_template_(std::move(chat_template)),
      limits_(MakeValidationLimits(*services.config, *services.info)) {
  const ServerConfig& c = *services.config;
  model_name_ = c.http.served_model_name;
  if (model_name_.empty()) {
    std::filesystem::path p(c.model.path);
    while (!p.empty() && p.filename().empty()) p = p.parent_path();  // "dir/" -> "dir"
    model_name_ = p.filename().string();
  }
  created_ = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

absl::StatusOr<std::unique_ptr<OpenAiApi>> OpenAiApi::Start(const Services& services) {
  const ServerConfig& c = *services.config;
  ASSIGN_OR_RETURN(ChatTemplate chat_template, ChatTemplate::Load(c.http.chat_template, c.model.path));
  std::unique_ptr<OpenAiApi> api(new OpenAiApi(services, std::move(chat_template)));
  // A client that disconnects mid-write must cost an EPIPE, not the process (httplib sends
  // without MSG_NOSIGNAL).
  std::signal(SIGPIPE, SIG_IGN);
  HttpTlsFiles tls{c.server.tls.cert_file, c.server.tls.key_file, c.server.tls.client_ca_file};
  OpenAiApi* self = api.get();
  ASSIGN_OR_RETURN(api->http_, HttpListener::Start("http.listen", c.http.listen,
                                                   [self](httplib::Server& s) { self->Routes(s); }, c.http.threads, tls));
  return api;
}

OpenAiApi::~OpenAiApi() { http_.reset(); }

void OpenAiApi::Routes(httplib::Server& s) {
  // The gRPC message limit bounds request bodies here too (larger ones get 413).
  s.set_payload_max_length(static_cast<size_t>(services_.config->server.max_message_bytes));
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const bool ok = serving_.load();
    SendJson(res, ok ? 200 : 503, {{"status", ok ? "ok" : "unavailable"}});
  });
  s.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) { ListModels(req, res); });
  s.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (!Authorized(req, res)) return;
    if (req.matches[1] != model_name_) {
      ApiError e = ToApiError(absl::NotFoundError(absl::StrCat("The model `", req.matches[1].str(), "` does not exist")));
      e.param = "model";
      e.code = "model_not_found";
      return SendError(res, e);
    }
    SendJson(res, 200,
             {{"id", model_name_}, {"object", "model"}, {"created", created_}, {"owned_by", "moeserve"},
              {"max_model_len", services_.info->max_context}});
  });
  s.Post("/v1/completions",
         [this](const httplib::Request& req, httplib::Response& res) { Generate(ApiKind::kCompletion, req, res); });
  s.Post("/v1/chat/completions",
         [this](const httplib::Request& req, httplib::Response& res) { Generate(ApiKind::kChat, req, res); });
  // Unknown paths and methods get OpenAI's error shape too.
  s.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    ApiError e;
    e.http_status = res.status;
    e.message = absl::StrCat("no route for ", req.method, " ", req.path);
    e.code = "not_found";
    SendError(res, e);
    return httplib::Server::HandlerResponse::Handled;
  }));
}

bool OpenAiApi::Authorized(const httplib::Request& req, httplib::Response& res) const {
  std::string header;
  const bool has = req.has_header("Authorization");
  if (has) header = req.get_header_value("Authorization");
  const grpc::Status auth = services_.access->AuthenticateHeader(has ? &header : nullptr);
  if (auth.ok()) return true;
  SendError(res, ToApiError(absl::UnauthenticatedError(
                     auth.error_message() == "invalid bearer token" ? "invalid bearer token (api key)"
                                                                     : "missing Authorization: Bearer <api key>")));
  return false;
}

void OpenAiApi::ListModels(const httplib::Request& req, httplib::Response& res) const {
  if (!Authorized(req, res)) return;
  SendJson(res, 200,
           {{"object", "list"},
            {"data", json::array({{{"id", model_name_},
                                   {"object", "model"},
                                   {"created", created_},
                                   {"owned_by", "moeserve"},
                                   {"max_model_len", services_.info->max_context}}})}});
}

void OpenAiApi::Generate(ApiKind kind, const httplib::Request& req, httplib::Response& res) {
  if (!Authorized(req, res)) return;
  auto parsed = ParseOpenAiRequest(kind, req.body, chat_template_, services_.tokenizer != nullptr);
  if (!parsed.ok()) return SendError(res, ToApiError(parsed.status()));
  if (parsed->model != model_name_) {
    ApiError e = ToApiError(absl::NotFoundError(
        absl::StrCat("The model `", parsed->model, "` does not exist; this server serves `", model_name_, "`")));
    e.param = "model";
    e.code = "model_not_found";
    return SendError(res, e);
  }
  auto params = ValidateGenerateRequest(parsed->generate, services_.tokenizer, limits_);
  if (!params.ok()) return SendError(res, ToApiError(ToOpenAiFieldNames(params.status(), *parsed)));

  auto g = std::make_shared<Generation>();
  g->scheduler = services_.scheduler;
  g->access = services_.access;
  g->client = ClientKey(req);
  if (grpc::Status slot = services_.access->Acquire(g->client); !slot.ok()) {
    return SendError(res, ToApiError(absl::ResourceExhaustedError(slot.error_message())));
  }
  const uint64_t n = next_id_.fetch_add(1);
  params->request_id = absl::StrCat("http-", n);
  auto handle = services_.scheduler->Enqueue(std::move(*params), g->queue);
  if (!handle.ok()) {
    g->Release();
    return SendError(res, ToApiError(handle.status()));
  }
  g->handle = *handle;
  g->peer = std::make_unique<PeerConnection>(req);
  g->textless = services_.tokenizer == nullptr;
  g->request = std::move(*parsed);
  g->builder = std::make_unique<ResponseBuilder>(g->request, absl::StrCat(kind == ApiKind::kChat ? "chatcmpl-" : "cmpl-", n),
                                                 model_name_, services_.tokenizer);

  if (g->request.stream) {
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream", [g](size_t, httplib::DataSink& sink) { return StreamStep(*g, sink); },
        // Runs when the response is destroyed, whatever happened: a stream cut short (write
        // error, server stopping) must not leave its request running.
        [g](bool) { g->Cancel(); });
    return;
  }
  TokenEvent merged;
  while (true) {
    std::optional<TokenEvent> e = g->queue->Take(kPollInterval);
    if (!e) {
      if (g->peer->Closed()) {
        g->Cancel();
        res.status = 499;  // nobody reads it; for the access log's sake
        return;
      }
      continue;
    }
    MergeEvent(merged, std::move(*e));
    if (merged.finish != FinishReason::kNone) break;
  }
  g->finished = true;
  g->Release();
  if (ResponseBuilder::FinishReasonName(merged.finish) == nullptr) return SendError(res, FailedFinish(merged));
  SendJson(res, 200, g->builder->Complete(merged));
}

}  // namespace moeserve
