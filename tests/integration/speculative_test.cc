// Speculative decoding on the real engine: greedy output with prompt-lookup drafts is the output
// without them, token for token, alone and in a batch; the drafts were really verified.
#include <gtest/gtest.h>

#include <thread>

#include "tests/integration/serving_test_util.h"

namespace moeserve::testing {
namespace {

// A prompt that repeats itself, so the lookup finds drafts; and a random one.
std::vector<std::vector<int32_t>> Prompts(int vocab) {
  std::vector<int32_t> repeating = RandomPrompt(20, vocab, 31);
  const std::vector<int32_t> copy(repeating.begin() + 1, repeating.end());
  repeating.insert(repeating.end(), copy.begin(), copy.end());
  return {repeating, RandomPrompt(30, vocab, 32), RandomPrompt(12, vocab, 33)};
}

std::vector<GenerateResult> RunAll(TestServer& server, const std::vector<std::vector<int32_t>>& prompts,
                                   bool concurrently) {
  std::vector<GenerateResult> results(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto run = [&, i] { results[i] = Generate(server.stub(), TokenRequest(prompts[i], 48)); };
    if (concurrently) {
      threads.emplace_back(run);
    } else {
      run();
    }
  }
  for (auto& t : threads) t.join();
  return results;
}

TEST(Speculative, GreedyOutputEqualsNoSpeculationAloneAndInABatch) {
  TestServer plain({"model.dtype=f32"});
  TestServer spec({"model.dtype=f32", "scheduler.speculative_max_draft=4"});
  const auto prompts = Prompts(static_cast<int>(plain.Info().vocab_size()));
  const std::vector<GenerateResult> expected = RunAll(plain, prompts, false);
  for (bool concurrently : {false, true}) {
    const std::vector<GenerateResult> got = RunAll(spec, prompts, concurrently);
    for (size_t i = 0; i < prompts.size(); ++i) {
      ASSERT_TRUE(got[i].status.ok()) << got[i].status.error_message();
      EXPECT_EQ(got[i].tokens, expected[i].tokens) << "prompt " << i << (concurrently ? " (batched)" : "");
    }
  }
  // A draft needs the last tokens to have occurred before; over 48 greedy tokens of the
  // random test model (which falls into repeats) and a self-repeating prompt, some do.
  const SchedulerStats stats = spec.server().scheduler_stats();
  EXPECT_GT(stats.spec_draft_tokens, 0u);
}

TEST(Speculative, ARequestAsksForItAndOutOfRangeIsRefused) {
  TestServer server({"model.dtype=f32"});
  const auto prompts = Prompts(static_cast<int>(server.Info().vocab_size()));
  v1::GenerateRequest r = TokenRequest(prompts[0], 16);
  const GenerateResult plain = Generate(server.stub(), r);
  r.mutable_speculative()->set_max_draft_tokens(3);
  const GenerateResult spec = Generate(server.stub(), r);
  ASSERT_TRUE(spec.status.ok());
  EXPECT_EQ(spec.tokens, plain.tokens);
  r.mutable_speculative()->set_max_draft_tokens(1000);
  const GenerateResult bad = Generate(server.stub(), r);
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.status.error_message().find("speculative.max_draft_tokens"), std::string::npos);
}

}  // namespace
}  // namespace moeserve::testing
