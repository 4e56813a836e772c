// The OpenAI-compatible HTTP API on a real server (loopback, ephemeral ports): response and SSE
// shapes, validation errors naming the field, the shared expert-budget rule, auth and limits,
// and cancellation of a request whose client disconnects (its KV blocks freed at once).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "server/openai/chat_template.h"
#include "tests/integration/serving_test_util.h"

namespace moeserve::testing {
namespace {

using nlohmann::json;

constexpr char kModel[] = "deco-default";

class HttpServer : public TestServer {
 public:
  explicit HttpServer(std::vector<std::string> overrides = {}) : TestServer(With(std::move(overrides))) {}
  httplib::Client Client() {
    httplib::Client c("127.0.0.1", server().http_port());
    c.set_read_timeout(120, 0);
    return c;
  }
  int vocab() { return static_cast<int>(Info().vocab_size()); }

 private:
  static std::vector<std::string> With(std::vector<std::string> o) {
    o.insert(o.begin(), "http.listen=127.0.0.1:0");
    // The build's default model is named by its directory; pin it so tests do not depend on it.
    o.insert(o.begin(), std::string("http.served_model_name=") + kModel);
    return o;
  }
};

struct Reply {
  int status = 0;
  std::string body;
  json j;  // parsed body (non-streaming)
};

Reply Post(httplib::Client& c, const std::string& path, const json& body, const httplib::Headers& headers = {}) {
  Reply r;
  auto res = c.Post(path.c_str(), headers, body.dump(), "application/json");
  if (!res) {
    ADD_FAILURE() << "no response for " << path << ": " << httplib::to_string(res.error());
    return r;
  }
  r.status = res->status;
  r.body = res->body;
  r.j = json::parse(res->body, nullptr, false);
  return r;
}

json Tokens(const std::vector<int32_t>& ids) { return json(ids); }

// The "data: " payloads of an SSE body, checking the framing on the way.
std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated SSE event at byte " << pos;
    if (end == std::string::npos) break;
    const std::string event = body.substr(pos, end - pos);
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    out.push_back(event.substr(6));
    pos = end + 2;
  }
  return out;
}

TEST(OpenAiHttp, ChatTemplates) {
  const std::vector<ChatMessage> m = {{"system", "Be brief."}, {"user", "Hi"}};
  auto chatml = ChatTemplate::Parse("chatml");
  ASSERT_TRUE(chatml.ok());
  EXPECT_EQ(chatml->Render(m),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  auto custom = ChatTemplate::Parse("{{{role}}}: {content}\n");
  ASSERT_TRUE(custom.ok());
  EXPECT_EQ(custom->Render(m), "{system}: Be brief.\n{user}: Hi\n{assistant}: ");
  EXPECT_FALSE(ChatTemplate::Parse("{role} only").ok());
  EXPECT_FALSE(ChatTemplate::Parse("{content}{content}").ok());
  EXPECT_FALSE(ChatTemplate::Parse("{message}").ok());
  // The model directory's chat_template.txt, unless the config names one.
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("moeserve-template-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "chat_template.txt") << "<{role}>{content}</s>";
  auto from_dir = ChatTemplate::Load("", dir.string());
  ASSERT_TRUE(from_dir.ok());
  EXPECT_EQ(from_dir->source(), "chat_template.txt");
  EXPECT_EQ(from_dir->Render({{"user", "x"}}), "<user>x</s><assistant>");
  auto from_config = ChatTemplate::Load("chatml", dir.string());
  ASSERT_TRUE(from_config.ok());
  EXPECT_EQ(from_config->source(), "chatml");
  std::filesystem::remove_all(dir);
}

TEST(OpenAiHttp, HealthAndModels) {
  HttpServer s;
  auto c = s.Client();
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  const json m = json::parse(models->body);
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["id"], kModel);
  EXPECT_EQ(m["data"][0]["object"], "model");
  auto missing = c.Get("/v1/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_TRUE(json::parse(missing->body).contains("error"));
}

TEST(OpenAiHttp, CompletionWithTokenIds) {
  HttpServer s;
  auto c = s.Client();
  const std::vector<int32_t> prompt = RandomPrompt(7, s.vocab(), 1);
  const Reply r = Post(c, "/v1/completions",
                       {{"model", kModel}, {"prompt", Tokens(prompt)}, {"max_tokens", 6}, {"temperature", 0}, {"user", "u"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j["object"], "text_completion");
  EXPECT_EQ(r.j["model"], kModel);
  EXPECT_EQ(r.j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  ASSERT_EQ(r.j["choices"].size(), 1u);
  const json& choice = r.j["choices"][0];
  EXPECT_TRUE(choice["text"].is_string());
  EXPECT_TRUE(choice["logprobs"].is_null());
  EXPECT_EQ(r.j["usage"]["prompt_tokens"], 7);
  const int completion = r.j["usage"]["completion_tokens"];
  EXPECT_EQ(r.j["usage"]["total_tokens"], 7 + completion);
  // EOS may end it early; otherwise it runs to max_tokens.
  if (choice["finish_reason"] == "length") {
    EXPECT_EQ(completion, 6);
  } else {
    EXPECT_EQ(choice["finish_reason"], "stop");
    EXPECT_LE(completion, 6);
  }
  const json& layers = r.j["moe"]["layers"];
  ASSERT_FALSE(layers.empty());
  for (const json& l : layers) {
    EXPECT_GT(l["tokens"].get<int>(), 0);
    EXPECT_GE(l["activation_ratio"].get<double>(), 0.0);
    EXPECT_LE(l["activation_ratio"].get<double>(), 1.0);
  }
}

TEST(OpenAiHttp, CompletionTextWithLogprobsAndStop) {
  MOESERVE_SKIP_WITHOUT_TOKENIZER();
  HttpServer s;
  auto c = s.Client();
  const Reply r = Post(c, "/v1/completions",
                       {{"model", kModel}, {"prompt", "Hello there"}, {"max_tokens", 4}, {"logprobs", 2},
                        {"seed", 7}, {"temperature", 0.8}, {"stop", "zzzz-never"}});
  ASSERT_EQ(r.status, 200) << r.body;
  const json& lp = r.j["choices"][0]["logprobs"];
  const size_t n = r.j["usage"]["completion_tokens"];
  EXPECT_EQ(lp["tokens"].size(), n);
  EXPECT_EQ(lp["token_logprobs"].size(), n);
  EXPECT_EQ(lp["text_offset"].size(), n);
  ASSERT_EQ(lp["top_logprobs"].size(), n);
  for (const json& top : lp["top_logprobs"]) EXPECT_LE(top.size(), 2u);
  for (const json& v : lp["token_logprobs"]) EXPECT_LE(v.get<double>(), 0.0);
}

TEST(OpenAiHttp, CompletionStreamFramingUsageAndDone) {
  HttpServer s;
  auto c = s.Client();
  const Reply r = Post(c, "/v1/completions",
                       {{"model", kModel}, {"prompt", Tokens(RandomPrompt(5, s.vocab(), 2))}, {"max_tokens", 8},
                        {"stream", true}, {"stream_options", {{"include_usage", true}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  const std::vector<std::string> data = SseData(r.body);
  ASSERT_GE(data.size(), 3u);
  EXPECT_EQ(data.back(), "[DONE]");
  const json usage = json::parse(data[data.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["prompt_tokens"], 5);
  const int completion = usage["usage"]["completion_tokens"];
  const json finish = json::parse(data[data.size() - 3]);
  const std::string reason = finish["choices"][0]["finish_reason"];
  EXPECT_TRUE(reason == "length" ? completion == 8 : reason == "stop") << reason << " " << completion;
  EXPECT_FALSE(finish["moe"]["layers"].empty());
  for (size_t i = 0; i + 3 < data.size(); ++i) {
    const json chunk = json::parse(data[i]);
    EXPECT_EQ(chunk["object"], "text_completion");
    EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
    EXPECT_TRUE(chunk["usage"].is_null());  // present and null before the usage chunk
  }
}

TEST(OpenAiHttp, ChatCompletionAndStream) {
  MOESERVE_SKIP_WITHOUT_TOKENIZER();
  HttpServer s;
  auto c = s.Client();
  const json messages = json::array({{{"role", "system"}, {"content", "Be brief."}},
                                     {{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", "Hi"}}})}}});
  const Reply r = Post(c, "/v1/chat/completions",
                       {{"model", kModel}, {"messages", messages}, {"max_completion_tokens", 5}, {"logprobs", true},
                        {"top_logprobs", 3}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j["object"], "chat.completion");
  EXPECT_EQ(r.j["choices"][0]["message"]["role"], "assistant");
  EXPECT_TRUE(r.j["choices"][0]["message"]["content"].is_string());
  const size_t n = r.j["usage"]["completion_tokens"];
  const json& content = r.j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), n);
  for (const json& t : content) {
    EXPECT_TRUE(t["token"].is_string());
    EXPECT_TRUE(t["bytes"].is_array());
    EXPECT_LE(t["top_logprobs"].size(), 3u);
  }
  // The ChatML prompt is longer than the two messages' words: the template was applied.
  EXPECT_GT(r.j["usage"]["prompt_tokens"].get<int>(), 8);

  const Reply st = Post(c, "/v1/chat/completions",
                        {{"model", kModel}, {"messages", messages}, {"max_tokens", 5}, {"stream", true}});
  ASSERT_EQ(st.status, 200) << st.body;
  const std::vector<std::string> data = SseData(st.body);
  ASSERT_GE(data.size(), 3u);
  EXPECT_EQ(data.back(), "[DONE]");
  const json first = json::parse(data.front());
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  const json last = json::parse(data[data.size() - 2]);
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  EXPECT_TRUE(last["choices"][0]["finish_reason"] == "length" || last["choices"][0]["finish_reason"] == "stop");
  EXPECT_FALSE(last.contains("usage"));  // include_usage not asked
}

TEST(OpenAiHttp, ValidationErrorsNameTheField) {
  HttpServer s({"server.max_new_tokens_limit=64"});
  auto c = s.Client();
  const json ids = Tokens({1, 5, 9});
  const json msgs = json::array({{{"role", "user"}, {"content", "hi"}}});
  struct Case {
    const char* path;
    json body;
    const char* param;
  };
  const std::vector<Case> cases = {
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"temperature", -1}}, "temperature"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"temperature", "hot"}}, "temperature"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"top_p", 0}}, "top_p"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"max_tokens", 65}}, "max_tokens"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"max_tokens", 0}}, "max_tokens"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"presence_penalty", 3}}, "presence_penalty"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"frequency_penalty", -3}}, "frequency_penalty"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"n", 2}}, "n"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"echo", true}}, "echo"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"logprobs", 21}}, "logprobs"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"best_of", 3}}, "best_of"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"logit_bias", {{"5", 1}}}}, "logit_bias"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"frobnicate", 1}}, "frobnicate"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"stream_options", {{"include_usage", true}}}},
       "stream_options"},
      {"/v1/completions", {{"model", kModel}, {"prompt", Tokens({1, 99999999})}}, "prompt[1]"},
      {"/v1/completions", {{"model", kModel}}, "prompt"},
      {"/v1/completions", {{"prompt", ids}}, "model"},
      {"/v1/completions", {{"model", kModel}, {"prompt", json::array({"a", "b"})}}, "prompt"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"stop", json::array({""})}}, "stop[0]"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"moe", {{"expert_budget", {{"min_weight", -1}}}}}},
       "moe.expert_budget.min_weight"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"moe", {{"expert_budget", {{"k_scale", -2}}}}}},
       "moe.expert_budget.k_scale"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"moe", {{"routing", 1}}}}, "moe.routing"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"moe", {{"prefix_cache", 1}}}}, "moe.prefix_cache"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"speculative", {{"max_draft_tokens", 65}}}},
       "speculative.max_draft_tokens"},
      {"/v1/completions", {{"model", kModel}, {"prompt", ids}, {"speculative", {{"draft", 2}}}}, "speculative.draft"},
      {"/v1/chat/completions", {{"model", kModel}, {"messages", msgs}, {"top_logprobs", 2}}, "top_logprobs"},
      {"/v1/chat/completions", {{"model", kModel}, {"messages", msgs}, {"logprobs", true}, {"top_logprobs", 21}},
       "top_logprobs"},
      {"/v1/chat/completions", {{"model", kModel}, {"messages", json::array()}}, "messages"},
      {"/v1/chat/completions", {{"model", kModel}, {"messages", json::array({{{"role", "tool"}, {"content", "x"}}})}},
       "messages[0].role"},
      {"/v1/chat/completions", {{"model", kModel}, {"messages", msgs}, {"tools", json::array()}}, "tools"},
      {"/v1/chat/completions", {{"model", kModel}, {"messages", msgs}, {"max_completion_tokens", 100}},
       "max_completion_tokens"},
      {"/v1/chat/completions", {{"model", kModel}, {"messages", msgs}, {"response_format", {{"type", "json_object"}}}},
       "response_format"},
  };
  for (const Case& k : cases) {
    // The context check runs on the tokenized chat prompt (sanitizer builds have no tokenizer).
    // So does the range check of chat's top_logprobs (after the messages are rendered).
    if (!MOESERVE_TEST_MODEL_HAS_TOKENIZER && std::string(k.param) == "max_completion_tokens") continue;
    if (!MOESERVE_TEST_MODEL_HAS_TOKENIZER && std::string(k.path) == "/v1/chat/completions" &&
        k.body.value("logprobs", false)) {
      continue;
    }
    const Reply r = Post(c, k.path, k.body);
    EXPECT_EQ(r.status, 400) << k.path << " " << k.body.dump() << " -> " << r.body;
    ASSERT_TRUE(r.j.contains("error")) << r.body;
    const json& e = r.j["error"];
    EXPECT_EQ(e["type"], "invalid_request_error") << r.body;
    EXPECT_EQ(e["param"], k.param) << k.body.dump() << " -> " << r.body;
    EXPECT_NE(e["message"].get<std::string>().find(k.param), std::string::npos) << r.body;
  }
  auto bad = c.Post("/v1/completions", "{not json", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  const Reply wrong_model = Post(c, "/v1/completions", {{"model", "gpt-4"}, {"prompt", ids}});
  EXPECT_EQ(wrong_model.status, 404);
  EXPECT_EQ(wrong_model.j["error"]["code"], "model_not_found");
  // Nothing was admitted by any of these.
  EXPECT_EQ(s.Info().num_requests_running(), 0u);
}

// The HTTP moe.expert_budget and the gRPC expert_budget go through the same override rule:
// the same greedy request gets the same routing totals through both.
TEST(OpenAiHttp, ExpertBudgetMatchesGrpc) {
  HttpServer s;
  auto c = s.Client();
  const std::vector<int32_t> prompt = RandomPrompt(6, s.vocab(), 3);
  for (double min_weight : {0.0, 0.05, 1e9}) {
    v1::GenerateRequest g = TokenRequest(prompt, 4);
    g.mutable_expert_budget()->set_min_weight(static_cast<float>(min_weight));
    const GenerateResult grpc = Generate(s.stub(), g);
    ASSERT_TRUE(grpc.status.ok());
    json body = {{"model", kModel}, {"prompt", Tokens(prompt)}, {"max_tokens", 4}, {"temperature", 0}};
    if (min_weight > 0) body["moe"] = {{"expert_budget", {{"min_weight", min_weight}}}};
    const Reply r = Post(c, "/v1/completions", body);
    ASSERT_EQ(r.status, 200) << r.body;
    if (r.j["usage"]["completion_tokens"] != 4) continue;  // EOS: lengths differ (ignore_eos is gRPC-only)
    const auto& layers = grpc.last.moe_stats().layers();
    ASSERT_EQ(r.j["moe"]["layers"].size(), static_cast<size_t>(layers.size()));
    uint64_t total = 0;
    for (int i = 0; i < layers.size(); ++i) {
      EXPECT_EQ(r.j["moe"]["layers"][i]["activations"].get<uint64_t>(), layers[i].expert_activations())
          << "min_weight " << min_weight << " layer " << i;
      total += layers[i].expert_activations();
    }
    if (min_weight > 1e6) {
      EXPECT_EQ(total, 0u);
    }
  }
}

TEST(OpenAiHttp, BearerTokenAndSharedPerClientLimit) {
  ::setenv("MOESERVE_HTTP_TEST_TOKEN", "sk-http-test", 1);
  HttpServer s({"server.auth.token_env=MOESERVE_HTTP_TEST_TOKEN", "server.max_concurrent_per_client=1",
                "scheduler.debug_step_delay_ms=5"});
  ::unsetenv("MOESERVE_HTTP_TEST_TOKEN");
  auto c = s.Client();
  const json body = {{"model", kModel}, {"prompt", Tokens({1, 5, 9})}, {"max_tokens", 2}};
  EXPECT_EQ(Post(c, "/v1/completions", body).status, 401);
  EXPECT_EQ(Post(c, "/v1/completions", body, {{"Authorization", "Bearer wrong"}}).status, 401);
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 401);
  auto health = c.Get("/health");  // probes stay open
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  const httplib::Headers auth = {{"Authorization", "Bearer sk-http-test"}};
  EXPECT_EQ(Post(c, "/v1/completions", body, auth).status, 200);

  // One generation in flight over gRPC (its first chunk read: admitted and running); the same
  // client over HTTP is then over its limit.
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer sk-http-test");
  auto reader = s.stub().Generate(&ctx, TokenRequest({1, 5, 9, 13, 17, 21}, 60));
  v1::GenerateResponse chunk;
  ASSERT_TRUE(reader->Read(&chunk));
  const Reply limited = Post(c, "/v1/completions", body, auth);
  EXPECT_EQ(limited.status, 429) << limited.body;
  EXPECT_EQ(limited.j["error"]["code"], "rate_limit_exceeded");
  while (reader->Read(&chunk)) {
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(Post(c, "/v1/completions", body, auth).status, 200);
}

// A raw connection, so that the test decides exactly when the client goes away.
class RawConnection {
 public:
  RawConnection(int port, const json& body, const std::string& path) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    const std::string b = body.dump();
    const std::string req = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
                            "Content-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b;
    EXPECT_EQ(::send(fd_, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  }
  ~RawConnection() { Close(); }
  // Reads until `needle` shows up (or the peer closes); returns what was read.
  std::string ReadUntil(const std::string& needle) {
    std::string got;
    char buf[4096];
    while (got.find(needle) == std::string::npos) {
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    return got;
  }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

void ExpectCancelledOnDisconnect(bool stream) {
  // 200 tokens at >= 20 ms a step would take >= 4 s; a cancel must end it far sooner.
  HttpServer s({"scheduler.debug_step_delay_ms=20"});
  const int64_t idle_free = s.Info().kv_blocks_free();
  const json body = {{"model", kModel}, {"prompt", Tokens(RandomPrompt(40, s.vocab(), 5))}, {"max_tokens", 200},
                     {"stream", stream}};
  RawConnection conn(s.server().http_port(), body, "/v1/completions");
  if (stream) {
    const std::string got = conn.ReadUntil("data: {");
    ASSERT_NE(got.find("text/event-stream"), std::string::npos) << got;
  }
  // Let the sequence grow to 5 blocks (80 tokens at 16 per block) before the client leaves.
  // (Sanitizer builds step several times slower: the waits allow for it.)
  int64_t during_free = 0;
  ASSERT_TRUE(WaitForInfo(
      s,
      [&](const v1::ModelInfo& i) {
        during_free = i.kv_blocks_free();
        return i.num_requests_running() == 1 && i.kv_blocks_free() <= idle_free - 5;
      },
      60000))
      << s.Info().DebugString() << " idle free " << idle_free;
  const auto closed = std::chrono::steady_clock::now();
  conn.Close();
  // Gone, and every block free again (idle prefix-cache blocks count as free).
  ASSERT_TRUE(WaitForInfo(
      s,
      [&](const v1::ModelInfo& i) {
        return i.num_requests_running() == 0 && i.num_requests_waiting() == 0 && i.kv_blocks_free() == idle_free;
      },
      3000))
      << s.Info().DebugString() << "blocks free while running: " << during_free;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - closed).count();
  // Uncancelled, the remaining ~120 tokens would take >= 2.4 s even without the sanitizers' cost.
  EXPECT_LT(seconds, MOESERVE_TEST_MODEL_HAS_TOKENIZER ? 1.0 : 2.0) << "the request ran on after its client left";
}

TEST(OpenAiHttp, StreamClientDisconnectCancelsAndFreesKvBlocks) { ExpectCancelledOnDisconnect(true); }
TEST(OpenAiHttp, NonStreamClientDisconnectCancelsAndFreesKvBlocks) { ExpectCancelledOnDisconnect(false); }

TEST(OpenAiHttp, ServesHttpsAndMutualTls) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("moeserve-http-certs-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string d = dir.string();
  const std::string script =
      "set -e; cd " + d + ";"
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=moeserve-http-ca 2>/dev/null;"
      "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > san.ext;"
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null;"
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext 2>/dev/null;"
      "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=client 2>/dev/null;"
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 2>/dev/null";
  ASSERT_EQ(std::system(("bash -c \"" + script + "\"").c_str()), 0) << "openssl failed";
  {
    HttpServer s({"server.tls.cert_file=" + d + "/server.pem", "server.tls.key_file=" + d + "/server.key"});
    httplib::SSLClient tls("127.0.0.1", s.server().http_port());
    tls.set_ca_cert_path((d + "/ca.pem").c_str());
    tls.enable_server_certificate_verification(true);
    auto r = tls.Post("/v1/completions", json{{"model", kModel}, {"prompt", Tokens({1, 5, 9})}, {"max_tokens", 2}}.dump(),
                      "application/json");
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 200);
    httplib::Client plain("127.0.0.1", s.server().http_port());
    EXPECT_FALSE(plain.Get("/health"));  // plaintext is refused
  }
  {  // Mutual TLS: server.tls.client_ca_file applies to the HTTP API as well.
    HttpServer s({"server.tls.cert_file=" + d + "/server.pem", "server.tls.key_file=" + d + "/server.key",
                  "server.tls.client_ca_file=" + d + "/ca.pem"});
    httplib::SSLClient anonymous("127.0.0.1", s.server().http_port());
    anonymous.set_ca_cert_path((d + "/ca.pem").c_str());
    EXPECT_FALSE(anonymous.Get("/health"));
    httplib::SSLClient with_cert("127.0.0.1", s.server().http_port(), d + "/client.pem", d + "/client.key");
    with_cert.set_ca_cert_path((d + "/ca.pem").c_str());
    auto r = with_cert.Get("/health");
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 200);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace moeserve::testing
