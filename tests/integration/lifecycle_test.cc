// Request lifecycle: cancellation, deadlines, queue limit, draining, a faulty sequence.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "tests/integration/serving_test_util.h"

namespace moeserve::testing {
namespace {

bool AllBlocksFree(const v1::ModelInfo& i) {
  return i.kv_blocks_free() == i.kv_blocks_total() && i.num_requests_running() == 0 && i.num_requests_waiting() == 0;
}

TEST(Lifecycle, ModelInfoNamesTheComputeDtypeAndBackend) {
  for (const char* dtype : {"int8", "f16"}) {
    TestServer server({std::string("model.dtype=") + dtype});
    const v1::ModelInfo info = server.Info();
    EXPECT_EQ(info.dtype(), dtype);
    const char* backend = std::getenv("MOESERVE_TEST_BACKEND");
    EXPECT_EQ(info.backend(), backend != nullptr && *backend != '\0' ? backend : "cpu");
  }
}

// A bf16 KV cache takes half the bytes per block, so the same memory budget holds twice the
// blocks; auto picks bf16 for bf16 compute. A bad value is refused naming the key.
TEST(Lifecycle, Bf16KvCacheHoldsTwiceTheBlocksOfF32) {
  const char* backend = std::getenv("MOESERVE_TEST_BACKEND");
  if (backend != nullptr && std::string(backend) == "cuda") GTEST_SKIP() << "the cuda backend's KV cache is bf16 only";
  TestServer f32({"scheduler.kv_memory_mb=4", "model.kv_dtype=f32"});
  TestServer bf16({"scheduler.kv_memory_mb=4", "model.kv_dtype=bf16"});
  TestServer automatic({"scheduler.kv_memory_mb=4", "model.dtype=bf16"});
  const int64_t f32_blocks = f32.Info().kv_blocks_total();
  ASSERT_GT(f32_blocks, 0);
  EXPECT_GE(bf16.Info().kv_blocks_total(), 2 * f32_blocks);  // floor(2M/B) is 2·floor(M/B) or one more
  EXPECT_LE(bf16.Info().kv_blocks_total(), 2 * f32_blocks + 1);
  EXPECT_EQ(automatic.Info().kv_blocks_total(), bf16.Info().kv_blocks_total());
  EXPECT_EQ(f32.Info().kv_dtype(), "f32");
  EXPECT_EQ(bf16.Info().kv_dtype(), "bf16");
  EXPECT_EQ(automatic.Info().kv_dtype(), "bf16");
  // Both cache types serve.
  const int vocab = static_cast<int>(f32.Info().vocab_size());
  for (TestServer* server : {&f32, &bf16}) {
    const GenerateResult r = Generate(server->stub(), TokenRequest(RandomPrompt(20, vocab, 9), 8));
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.tokens.size(), 8u);
  }
  const auto bad = ParseServerConfig("", "test", {"model.kv_dtype=fp8"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("model.kv_dtype"), absl::string_view::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("auto, f32 or bf16"), absl::string_view::npos) << bad.status().message();
}

TEST(Lifecycle, ClientCancelFreesBlocks) {
  TestServer server({"scheduler.debug_step_delay_ms=5"});
  const int vocab = static_cast<int>(server.Info().vocab_size());
  grpc::ClientContext ctx;
  auto reader = server.stub().Generate(&ctx, TokenRequest(RandomPrompt(40, vocab, 1), 400));
  v1::GenerateResponse chunk;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&chunk));
  EXPECT_LT(server.Info().kv_blocks_free(), server.Info().kv_blocks_total());
  ctx.TryCancel();
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitForInfo(server, AllBlocksFree));
}

TEST(Lifecycle, DeadlineEndsRequestAndFreesBlocks) {
  TestServer server({"scheduler.debug_step_delay_ms=10"});
  const int vocab = static_cast<int>(server.Info().vocab_size());
  // 400 tokens at >= 10 ms per step cannot finish within 300 ms.
  const GenerateResult r = Generate(server.stub(), TokenRequest(RandomPrompt(10, vocab, 2), 400), 300);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(r.tokens.size(), 400u);
  EXPECT_TRUE(WaitForInfo(server, AllBlocksFree));
}

TEST(Lifecycle, QueueLimitGivesResourceExhausted) {
  TestServer server({"scheduler.debug_step_delay_ms=10", "scheduler.max_running=1", "scheduler.max_waiting=1"});
  const int vocab = static_cast<int>(server.Info().vocab_size());
  const v1::GenerateRequest slow = TokenRequest(RandomPrompt(8, vocab, 3), 200);
  std::thread first([&] { Generate(server.stub(), slow, 1000); });
  ASSERT_TRUE(WaitForInfo(server, [](const v1::ModelInfo& i) { return i.num_requests_running() == 1; }));
  std::thread second([&] { Generate(server.stub(), slow, 1000); });
  ASSERT_TRUE(WaitForInfo(server, [](const v1::ModelInfo& i) { return i.num_requests_waiting() == 1; }));
  const GenerateResult third = Generate(server.stub(), slow);
  EXPECT_EQ(third.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(third.status.error_message().find("queue"), std::string::npos);
  first.join();
  second.join();
  EXPECT_TRUE(WaitForInfo(server, AllBlocksFree));
}

TEST(Lifecycle, DrainRefusesNewRequestsAndFinishesInFlight) {
  TestServer server({"scheduler.debug_step_delay_ms=5"});
  const int vocab = static_cast<int>(server.Info().vocab_size());
  GenerateResult in_flight;
  std::thread runner([&] { in_flight = Generate(server.stub(), TokenRequest(RandomPrompt(8, vocab, 4), 60)); });
  ASSERT_TRUE(WaitForInfo(server, [](const v1::ModelInfo& i) { return i.num_requests_running() == 1; }));
  std::thread drainer([&] { server.server().Shutdown(); });
  // Once draining, new requests are refused with UNAVAILABLE.
  GenerateResult refused;
  for (int i = 0; i < 500; ++i) {
    refused = Generate(server.stub(), TokenRequest(RandomPrompt(4, vocab, 5), 2));
    if (!refused.status.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  runner.join();
  drainer.join();
  ASSERT_TRUE(in_flight.status.ok()) << in_flight.status.error_message();
  EXPECT_EQ(in_flight.finish, v1::LENGTH);
  EXPECT_EQ(in_flight.tokens.size(), 60u);
}

TEST(Lifecycle, DrainPastGracePeriodCancelsWhatIsLeft) {
  TestServer server({"scheduler.debug_step_delay_ms=10", "server.grace_period_s=0.2"});
  const int vocab = static_cast<int>(server.Info().vocab_size());
  GenerateResult in_flight;
  std::thread runner([&] { in_flight = Generate(server.stub(), TokenRequest(RandomPrompt(8, vocab, 6), 400)); });
  ASSERT_TRUE(WaitForInfo(server, [](const v1::ModelInfo& i) { return i.num_requests_running() == 1; }));
  server.server().Shutdown();
  runner.join();
  EXPECT_TRUE(in_flight.status.ok()) << in_flight.status.error_message();
  EXPECT_EQ(in_flight.finish, v1::CANCELLED);
  EXPECT_LT(in_flight.tokens.size(), 400u);
}

TEST(Lifecycle, NonFiniteLogitsEndOnlyThatRequest) {
  TestServer server({"scheduler.debug_nan_request_prefix=faulty-"});
  const int vocab = static_cast<int>(server.Info().vocab_size());
  v1::GenerateRequest bad = TokenRequest(RandomPrompt(10, vocab, 8), 20);
  bad.set_request_id("faulty-1");
  const v1::GenerateRequest good = TokenRequest(RandomPrompt(10, vocab, 9), 20);
  const GenerateResult good_alone = Generate(server.stub(), good);
  GenerateResult bad_result, good_result;
  std::thread a([&] { bad_result = Generate(server.stub(), bad); });
  std::thread b([&] { good_result = Generate(server.stub(), good); });
  a.join();
  b.join();
  EXPECT_EQ(bad_result.finish, v1::ERROR);
  EXPECT_FALSE(bad_result.last.error().empty());
  EXPECT_EQ(good_result.finish, v1::LENGTH);
  EXPECT_EQ(good_result.tokens, good_alone.tokens);
  EXPECT_TRUE(WaitForInfo(server, AllBlocksFree));
}

}  // namespace
}  // namespace moeserve::testing
