// Load and soak on loopback: hundreds of concurrent streams with random lengths, random client
// cancels and deadlines, and readers that stall. Every stream must end with a terminal status,
// every KV block must come back, memory must stay bounded, the server must stay healthy, and a
// stalled reader must not hold up anyone else.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <random>
#include <thread>

#include "tests/integration/serving_test_util.h"

namespace moeserve::testing {
namespace {

int64_t ResidentKiB() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      int64_t kib = 0;
      status >> kib;
      return kib;
    }
  }
  return 0;
}

bool Terminal(grpc::StatusCode code) {
  return code == grpc::StatusCode::OK || code == grpc::StatusCode::CANCELLED ||
         code == grpc::StatusCode::DEADLINE_EXCEEDED || code == grpc::StatusCode::RESOURCE_EXHAUSTED;
}

TEST(Soak, FiveHundredStreamsWithCancelsDeadlinesAndStalls) {
  TestServer server({"scheduler.max_waiting=1024", "scheduler.max_running=64", "scheduler.max_batch_tokens=256"});
  const int vocab = static_cast<int>(server.Info().vocab_size());
  const int64_t rss_before = ResidentKiB();
  constexpr int kStreams = 500;
  std::atomic<int> ok{0}, cancelled{0}, deadline{0}, other{0}, stalled_done{0};
  std::vector<std::thread> clients;
  clients.reserve(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] {
      std::mt19937 rng(1000 + i);
      const int prompt_len = 2 + static_cast<int>(rng() % 40);
      const int max_new = 1 + static_cast<int>(rng() % 48);
      const int behaviour = static_cast<int>(rng() % 10);  // 0: cancel, 1: tight deadline, 2: stall, else normal
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       (behaviour == 1 ? std::chrono::milliseconds(5 + rng() % 50) : std::chrono::seconds(120)));
      auto reader = server.stub().Generate(&ctx, TokenRequest(RandomPrompt(prompt_len, vocab, i), max_new));
      v1::GenerateResponse chunk;
      int chunks = 0;
      if (behaviour == 2) std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 800));  // stop reading
      while (reader->Read(&chunk)) {
        if (behaviour == 0 && ++chunks == 2) ctx.TryCancel();
      }
      const grpc::Status status = reader->Finish();
      if (status.ok()) ++ok;
      if (status.error_code() == grpc::StatusCode::CANCELLED) ++cancelled;
      if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) ++deadline;
      if (!Terminal(status.error_code())) {
        ++other;
        ADD_FAILURE() << "stream " << i << " ended with " << status.error_code() << ": " << status.error_message();
      }
      if (behaviour == 2 && status.ok()) ++stalled_done;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok + cancelled + deadline + other, kStreams);
  EXPECT_EQ(other, 0);
  EXPECT_GT(ok.load(), kStreams / 2);
  EXPECT_GT(stalled_done.load(), 0);  // stalled readers still get their whole output
  // Everything returned: no running or waiting request, every KV block free.
  EXPECT_TRUE(WaitForInfo(server, [](const v1::ModelInfo& i) {
    return i.num_requests_running() == 0 && i.num_requests_waiting() == 0 && i.kv_blocks_free() == i.kv_blocks_total();
  }));
  // Memory stays bounded (client threads and their buffers are in this process too).
  EXPECT_LT(ResidentKiB() - rss_before, 512 * 1024) << "RSS grew by " << (ResidentKiB() - rss_before) << " KiB";
  // And the server still serves.
  EXPECT_TRUE(Generate(server.stub(), TokenRequest({1, 5, 9}, 4)).status.ok());
}

TEST(Soak, StalledReaderDoesNotHoldUpOthers) {
  TestServer server;
  const int vocab = static_cast<int>(server.Info().vocab_size());
  // A stream whose client stops reading after the first chunk, for a long time. Top-20
  // logprobs make each chunk ~200 bytes, so 480 of them overrun the HTTP/2 flow-control
  // window and the server has to hold tokens back instead of writing them one by one.
  constexpr int kStalledTokens = 480;
  // Its own channel with a fixed 16 KiB receive window (no BDP growth), so the backpressure
  // does not depend on how fast this machine runs.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 * 1024);
  auto stalled_stub = v1::Inference::NewStub(grpc::CreateCustomChannel(
      "127.0.0.1:" + std::to_string(server.server().port()), grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext stalled_ctx;
  v1::GenerateRequest stalled_request = TokenRequest(RandomPrompt(10, vocab, 1), kStalledTokens);
  stalled_request.set_logprobs(20);
  auto stalled = stalled_stub->Generate(&stalled_ctx, stalled_request);
  v1::GenerateResponse chunk;
  ASSERT_TRUE(stalled->Read(&chunk));
  // Meanwhile other clients are served to completion.
  for (int i = 0; i < 20; ++i) {
    const GenerateResult r = Generate(server.stub(), TokenRequest(RandomPrompt(8, vocab, 10 + i), 30), 30000);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.tokens.size(), 30u);
  }
  // Let the stalled request finish generating while nobody reads it, so the tokens past the
  // flow-control window must have been held back whatever the machine's speed.
  EXPECT_TRUE(WaitForInfo(server, [](const v1::ModelInfo& i) { return i.num_requests_running() == 0; }, 60000));
  // The stalled reader resumes and gets every token, merged into fewer chunks.
  size_t tokens = chunk.token_ids_size();
  int chunks = 1;
  while (stalled->Read(&chunk)) {
    tokens += chunk.token_ids_size();
    ++chunks;
  }
  EXPECT_TRUE(stalled->Finish().ok());
  EXPECT_EQ(tokens, static_cast<size_t>(kStalledTokens));
  EXPECT_LT(chunks, kStalledTokens);
}

}  // namespace
}  // namespace moeserve::testing
