// A real moeserve (ModelServer) on a loopback ephemeral port, and client helpers.
#ifndef MOESERVE_TESTS_INTEGRATION_SERVING_TEST_UTIL_H_
#define MOESERVE_TESTS_INTEGRATION_SERVING_TEST_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "moeserve/v1/inference.grpc.pb.h"
#include "server/model_server.h"

namespace moeserve::testing {

// Sanitizer runtimes refuse RTLD_DEEPBIND, without which SentencePiece's bundled protobuf
// clashes with gRPC's; sanitizer builds therefore serve a copy of the default model without
// its tokenizer, and the few tests that need text skip there (the Release run has them all).
#define MOESERVE_SKIP_WITHOUT_TOKENIZER()                                                    \
  do {                                                                                       \
    if (!MOESERVE_TEST_MODEL_HAS_TOKENIZER)                                                  \
      GTEST_SKIP() << "sanitizer build: the test model has no tokenizer (see serving_test_util.h)"; \
  } while (0)

struct GenerateResult {
  grpc::Status status;
  std::vector<int32_t> tokens;
  std::string text;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  int chunks = 0;
  v1::GenerateResponse last;
};

class TestServer {
 public:
  // Starts on the default model with `overrides` ("section.key=value"); fails the test on error.
  explicit TestServer(std::vector<std::string> overrides = {});
  ~TestServer();

  ModelServer& server() { return *server_; }
  v1::Inference::Stub& stub() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  v1::ModelInfo Info();

 private:
  std::unique_ptr<ModelServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

// Reads a whole Generate stream.
GenerateResult Generate(v1::Inference::Stub& stub, const v1::GenerateRequest& request, int deadline_ms = 60000);

// A greedy request over token ids that runs to exactly max_new_tokens.
v1::GenerateRequest TokenRequest(const std::vector<int32_t>& prompt, int max_new_tokens);

// Random prompt of `length` ids in [3, vocab), BOS first.
std::vector<int32_t> RandomPrompt(int length, int vocab, uint32_t seed);

// Polls until the predicate on GetModelInfo holds or `timeout_ms` passes.
bool WaitForInfo(TestServer& server, const std::function<bool(const v1::ModelInfo&)>& pred, int timeout_ms = 10000);

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_INTEGRATION_SERVING_TEST_UTIL_H_
