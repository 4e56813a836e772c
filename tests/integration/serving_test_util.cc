#include "tests/integration/serving_test_util.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <thread>

namespace moeserve::testing {

TestServer::TestServer(std::vector<std::string> overrides) {
  std::vector<std::string> all = {std::string("model.path=") + MOESERVE_TEST_MODEL_DIR, "server.listen=127.0.0.1:0",
                                  "model.threads=2", "server.grace_period_s=10", "metrics.listen=127.0.0.1:0",
                                  "http.listen="};  // the OpenAI API's tests turn it on (port 0)
  // MOESERVE_TEST_BACKEND=cuda runs the serving tests on the CUDA backend (docs/CUDA.md).
  if (const char* backend = std::getenv("MOESERVE_TEST_BACKEND"); backend != nullptr && *backend != '\0') {
    all.push_back(std::string("model.backend=") + backend);
  }
  all.insert(all.end(), overrides.begin(), overrides.end());
  auto config = ParseServerConfig("", "test", all);
  if (!config.ok()) throw std::runtime_error(std::string(config.status().message()));
  auto server = ModelServer::Start(*config);
  // gtest reports an exception from the test body as a failure with this message.
  if (!server.ok()) throw std::runtime_error(std::string(server.status().message()));
  server_ = std::move(*server);
  channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials());
  stub_ = v1::Inference::NewStub(channel_);
}

TestServer::~TestServer() {
  if (server_) server_->Shutdown();
}

v1::ModelInfo TestServer::Info() {
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  EXPECT_TRUE(stub_->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok());
  return info;
}

GenerateResult Generate(v1::Inference::Stub& stub, const v1::GenerateRequest& request, int deadline_ms) {
  GenerateResult result;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  auto reader = stub.Generate(&ctx, request);
  v1::GenerateResponse chunk;
  while (reader->Read(&chunk)) {
    ++result.chunks;
    result.tokens.insert(result.tokens.end(), chunk.token_ids().begin(), chunk.token_ids().end());
    result.text += chunk.text();
    if (chunk.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) result.finish = chunk.finish_reason();
    result.last = chunk;
  }
  result.status = reader->Finish();
  return result;
}

v1::GenerateRequest TokenRequest(const std::vector<int32_t>& prompt, int max_new_tokens) {
  v1::GenerateRequest r;
  for (int32_t id : prompt) r.mutable_token_ids()->add_ids(id);
  r.set_max_new_tokens(max_new_tokens);
  r.set_ignore_eos(true);
  return r;
}

std::vector<int32_t> RandomPrompt(int length, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> p = {1};
  for (int i = 1; i < length; ++i) p.push_back(3 + static_cast<int32_t>(rng() % (vocab - 3)));
  return p;
}

bool WaitForInfo(TestServer& server, const std::function<bool(const v1::ModelInfo&)>& pred, int timeout_ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    if (pred(server.Info())) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace moeserve::testing
