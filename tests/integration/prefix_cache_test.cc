// Prefix caching on the real engine: a request whose prompt starts with one seen before reuses
// that prefix's KV blocks and gives exactly what it gives without the cache, in f32: the same
// tokens and the same log-probabilities, bit for bit. Cached tokens are not routed again.
#include <gtest/gtest.h>

#include "tests/integration/serving_test_util.h"

namespace moeserve::testing {
namespace {

v1::GenerateRequest WithLogprobs(const std::vector<int32_t>& prompt, int max_new) {
  v1::GenerateRequest r = TokenRequest(prompt, max_new);
  r.set_logprobs(5);
  return r;
}

uint64_t RoutedTokens(const v1::GenerateResponse& r) {
  uint64_t tokens = 0;
  for (const auto& layer : r.moe_stats().layers()) tokens = std::max<uint64_t>(tokens, layer.routed_tokens());
  return tokens;
}
uint64_t RoutedTokens(const GenerateResult& r) { return RoutedTokens(r.last); }

v1::GenerateResponse Complete(TestServer& server, const v1::GenerateRequest& request) {
  grpc::ClientContext context;
  v1::GenerateResponse response;
  const grpc::Status status = server.stub().Complete(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response;
}

// Every token's log-probability and its top alternatives, flattened.
std::vector<float> Logprobs(const v1::GenerateResponse& r) {
  std::vector<float> all;
  for (const auto& lp : r.logprobs()) {
    all.push_back(lp.logprob());
    for (const auto& top : lp.top()) all.push_back(top.logprob());
  }
  return all;
}

TEST(PrefixCache, ASharedPrefixGivesTheSameTokensAndLogprobsAsNoCacheInF32) {
  TestServer cached({"model.dtype=f32", "scheduler.prefix_cache=true"});
  TestServer uncached({"model.dtype=f32", "scheduler.prefix_cache=false"});
  const int vocab = static_cast<int>(cached.Info().vocab_size());
  const std::vector<int32_t> prefix = RandomPrompt(70, vocab, 5);
  std::vector<int32_t> longer = prefix;
  for (int32_t t : RandomPrompt(13, vocab, 6)) longer.push_back(t);

  std::vector<v1::GenerateResponse> results[2];
  TestServer* servers[2] = {&cached, &uncached};
  for (int s = 0; s < 2; ++s) {
    results[s].push_back(Complete(*servers[s], WithLogprobs(prefix, 6)));
    results[s].push_back(Complete(*servers[s], WithLogprobs(longer, 6)));
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(std::vector<int32_t>(results[0][i].token_ids().begin(), results[0][i].token_ids().end()),
              std::vector<int32_t>(results[1][i].token_ids().begin(), results[1][i].token_ids().end()))
        << "request " << i;
    ASSERT_EQ(results[0][i].logprobs_size(), 6);
    EXPECT_EQ(Logprobs(results[0][i]), Logprobs(results[1][i])) << "request " << i;
  }
  // 70 prompt tokens in blocks of 16: the longer request reuses four full blocks (64 tokens),
  // which are not routed again.
  EXPECT_EQ(RoutedTokens(results[1][1]) - RoutedTokens(results[0][1]), 64u);
  EXPECT_EQ(RoutedTokens(results[0][0]), RoutedTokens(results[1][0]));
}

TEST(PrefixCache, ARequestCanOptOut) {
  TestServer server({"model.dtype=f32"});
  const int vocab = static_cast<int>(server.Info().vocab_size());
  const std::vector<int32_t> prompt = RandomPrompt(40, vocab, 8);
  const GenerateResult first = Generate(server.stub(), TokenRequest(prompt, 4));
  v1::GenerateRequest again = TokenRequest(prompt, 4);
  again.set_skip_prefix_cache(true);
  const GenerateResult opted_out = Generate(server.stub(), again);
  const GenerateResult reused = Generate(server.stub(), TokenRequest(prompt, 4));
  ASSERT_TRUE(first.status.ok() && opted_out.status.ok() && reused.status.ok());
  EXPECT_EQ(opted_out.tokens, first.tokens);
  EXPECT_EQ(reused.tokens, first.tokens);
  EXPECT_EQ(RoutedTokens(opted_out), RoutedTokens(first));
  EXPECT_EQ(RoutedTokens(first) - RoutedTokens(reused), 32u);  // two full blocks of 16
  // Every block is back (cached ones idle and counted as free) once the requests are done.
  EXPECT_TRUE(WaitForInfo(server, [](const v1::ModelInfo& i) { return i.kv_blocks_free() == i.kv_blocks_total(); }));
}

}  // namespace
}  // namespace moeserve::testing
