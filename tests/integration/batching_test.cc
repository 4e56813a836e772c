// The continuous-batching invariant: concurrent requests produce exactly the tokens they
// produce alone, including when KV blocks run out and sequences are preempted and recomputed.
#include <gtest/gtest.h>

#include <thread>

#include "tests/integration/serving_test_util.h"

namespace moeserve::testing {
namespace {

struct Case {
  std::vector<int32_t> prompt;
  int max_new;
};

std::vector<Case> MixedCases(int vocab) {
  std::vector<Case> cases;
  for (int i = 0; i < 8; ++i) cases.push_back({RandomPrompt(3 + 9 * i, vocab, 100 + i), 10 + 7 * (i % 4)});
  return cases;
}

std::vector<GenerateResult> RunConcurrently(TestServer& server, const std::vector<v1::GenerateRequest>& requests) {
  std::vector<GenerateResult> results(requests.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < requests.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = Generate(server.stub(), requests[i]); });
  }
  for (auto& t : threads) t.join();
  return results;
}

TEST(Batching, ConcurrentGreedyEqualsSequential) {
  TestServer server;
  const int vocab = static_cast<int>(server.Info().vocab_size());
  std::vector<v1::GenerateRequest> requests;
  for (const Case& c : MixedCases(vocab)) requests.push_back(TokenRequest(c.prompt, c.max_new));
  std::vector<GenerateResult> alone;
  for (const auto& r : requests) alone.push_back(Generate(server.stub(), r));
  const std::vector<GenerateResult> together = RunConcurrently(server, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(alone[i].status.ok()) << alone[i].status.error_message();
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    EXPECT_EQ(alone[i].tokens.size(), static_cast<size_t>(requests[i].max_new_tokens()));
    EXPECT_EQ(alone[i].finish, v1::LENGTH);
    EXPECT_EQ(together[i].tokens, alone[i].tokens) << "request " << i;
  }
}

TEST(Batching, PreemptionUnderTinyKvBudgetKeepsTokens) {
  // 12 blocks of 8 tokens: eight requests of up to ~100 tokens cannot all hold their KV.
  TestServer reference;
  TestServer server({"scheduler.kv_blocks=12", "scheduler.kv_block_size=8", "scheduler.max_batch_tokens=64",
                     "scheduler.prefill_chunk=16"});
  const int vocab = static_cast<int>(server.Info().vocab_size());
  std::vector<v1::GenerateRequest> requests;
  // Each fits alone (at most 88 of 96 slots), together they need about 4x the cache.
  for (int i = 0; i < 8; ++i) requests.push_back(TokenRequest(RandomPrompt(12 + 4 * i, vocab, 7 + i), 20 + 4 * i));
  std::vector<GenerateResult> alone;
  for (const auto& r : requests) alone.push_back(Generate(reference.stub(), r));
  const std::vector<GenerateResult> together = RunConcurrently(server, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    EXPECT_EQ(together[i].tokens, alone[i].tokens) << "request " << i;
  }
  EXPECT_GT(server.server().scheduler_stats().preemptions, 0u);
  // Every block is back once everything finished.
  EXPECT_TRUE(WaitForInfo(server, [](const v1::ModelInfo& i) { return i.kv_blocks_free() == i.kv_blocks_total(); }));
}

TEST(Batching, SeededSamplingIsReproducibleUnderDifferentMixes) {
  TestServer server;
  const int vocab = static_cast<int>(server.Info().vocab_size());
  v1::GenerateRequest seeded = TokenRequest(RandomPrompt(12, vocab, 5), 24);
  seeded.mutable_sampling()->set_temperature(1.0f);
  seeded.mutable_sampling()->set_top_p(0.9f);
  seeded.mutable_sampling()->set_seed(1234);
  const GenerateResult alone = Generate(server.stub(), seeded);
  ASSERT_TRUE(alone.status.ok());
  std::vector<v1::GenerateRequest> mix = {seeded};
  for (int i = 0; i < 5; ++i) {
    v1::GenerateRequest other = TokenRequest(RandomPrompt(5 + 4 * i, vocab, 50 + i), 20);
    other.mutable_sampling()->set_temperature(0.8f);
    mix.push_back(other);
  }
  const std::vector<GenerateResult> together = RunConcurrently(server, mix);
  EXPECT_EQ(together[0].tokens, alone.tokens);
  // A different seed gives a different continuation (24 tokens over a 1000-token vocabulary).
  seeded.mutable_sampling()->set_seed(4321);
  EXPECT_NE(Generate(server.stub(), seeded).tokens, alone.tokens);
}

TEST(Batching, StreamAndCompleteAgreeAndCountTokens) {
  MOESERVE_SKIP_WITHOUT_TOKENIZER();
  TestServer server;
  v1::GenerateRequest r;
  r.set_text("Experts are chosen per token");
  r.set_max_new_tokens(16);
  r.set_ignore_eos(true);
  r.set_logprobs(3);
  const GenerateResult stream = Generate(server.stub(), r);
  ASSERT_TRUE(stream.status.ok());
  grpc::ClientContext ctx;
  v1::GenerateResponse complete;
  ASSERT_TRUE(server.stub().Complete(&ctx, r, &complete).ok());
  EXPECT_EQ(std::vector<int32_t>(complete.token_ids().begin(), complete.token_ids().end()), stream.tokens);
  EXPECT_EQ(complete.text(), stream.text);
  EXPECT_EQ(stream.last.completion_tokens(), 16u);
  EXPECT_EQ(complete.logprobs_size(), 16);
  for (const auto& lp : complete.logprobs()) {
    ASSERT_EQ(lp.top_size(), 3);
    EXPECT_LE(lp.logprob(), 0.0f);
    EXPECT_GE(lp.top(0).logprob(), lp.top(1).logprob());
    EXPECT_EQ(lp.top(0).token_id(), lp.token_id());  // greedy picks the top token
  }
  // MoeStats: every MoE layer saw prompt + generated tokens (the last token is not fed back).
  ASSERT_GT(stream.last.moe_stats().layers_size(), 0);
  for (const auto& layer : stream.last.moe_stats().layers()) {
    EXPECT_EQ(layer.routed_tokens(), stream.last.prompt_tokens() + 16u - 1u);
    EXPECT_NEAR(layer.mean_active_experts(), double(layer.expert_activations()) / layer.routed_tokens(), 1e-12);
    EXPECT_LE(layer.mean_active_experts(), layer.num_experts());
  }
}

}  // namespace
}  // namespace moeserve::testing
