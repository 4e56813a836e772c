// Every invalid field value is INVALID_ARGUMENT with a message that names the field.
#include <gtest/gtest.h>

#include "tests/integration/serving_test_util.h"

namespace moeserve::testing {
namespace {

struct BadCase {
  const char* name;
  std::function<void(v1::GenerateRequest&)> mutate;
  const char* field;
};

TEST(Validation, InvalidFieldsAreNamed) {
  TestServer server({"server.max_new_tokens_limit=1000"});
  const v1::ModelInfo info = server.Info();
  const int vocab = static_cast<int>(info.vocab_size());
  const int context = static_cast<int>(info.max_context());
  const std::vector<BadCase> cases = {
      {"empty text", [](auto& r) { r.set_text(""); }, "text"},
      {"no prompt", [](auto& r) { r.clear_prompt(); }, "prompt"},
      {"empty ids", [](auto& r) { r.mutable_token_ids()->clear_ids(); }, "token_ids"},
      {"id >= vocab", [&](auto& r) { r.mutable_token_ids()->add_ids(vocab); }, "token_ids[2]"},
      {"negative id", [](auto& r) { r.mutable_token_ids()->add_ids(-1); }, "token_ids[2]"},
      {"temperature < 0", [](auto& r) { r.mutable_sampling()->set_temperature(-0.5f); }, "sampling.temperature"},
      {"temperature NaN", [](auto& r) { r.mutable_sampling()->set_temperature(NAN); }, "sampling.temperature"},
      {"top_p 0", [](auto& r) { r.mutable_sampling()->set_top_p(0.0f); }, "sampling.top_p"},
      {"top_p > 1", [](auto& r) { r.mutable_sampling()->set_top_p(1.5f); }, "sampling.top_p"},
      {"top_k < 0", [](auto& r) { r.mutable_sampling()->set_top_k(-1); }, "sampling.top_k"},
      {"min_p > 1", [](auto& r) { r.mutable_sampling()->set_min_p(2.0f); }, "sampling.min_p"},
      {"repetition 0", [](auto& r) { r.mutable_sampling()->set_repetition_penalty(0.0f); },
       "sampling.repetition_penalty"},
      {"presence > 2", [](auto& r) { r.mutable_sampling()->set_presence_penalty(3.0f); }, "sampling.presence_penalty"},
      {"frequency < -2", [](auto& r) { r.mutable_sampling()->set_frequency_penalty(-3.0f); },
       "sampling.frequency_penalty"},
      {"max_new over limit", [](auto& r) { r.set_max_new_tokens(1001); }, "max_new_tokens"},
      {"prompt + max_new > context", [&](auto& r) { r.set_max_new_tokens(context); }, "max_new_tokens"},
      {"prompt too long", [&](auto& r) {
         for (int i = 0; i < context; ++i) r.mutable_token_ids()->add_ids(5);
       }, "token_ids"},
      {"empty stop string", [](auto& r) { r.add_stop(""); }, "stop[0]"},
      {"stop token >= vocab", [&](auto& r) { r.add_stop_token_ids(vocab + 5); }, "stop_token_ids[0]"},
      {"logprobs > 20", [](auto& r) { r.set_logprobs(21); }, "logprobs"},
      {"request_id too long", [](auto& r) { r.set_request_id(std::string(200, 'x')); }, "request_id"},
      {"budget min_weight < 0", [](auto& r) { r.mutable_expert_budget()->set_min_weight(-1); },
       "expert_budget.min_weight"},
      {"budget k_scale NaN", [](auto& r) { r.mutable_expert_budget()->set_k_scale(NAN); }, "expert_budget.k_scale"},
  };
  for (const BadCase& c : cases) {
    v1::GenerateRequest r = TokenRequest({1, 5}, 4);
    c.mutate(r);
    const GenerateResult stream = Generate(server.stub(), r);
    EXPECT_EQ(stream.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name;
    EXPECT_EQ(stream.status.error_message().rfind(c.field, 0), 0u)
        << c.name << ": message \"" << stream.status.error_message() << "\" should start with " << c.field;
    grpc::ClientContext ctx;
    v1::GenerateResponse response;
    EXPECT_EQ(server.stub().Complete(&ctx, r, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name;
  }
  // The server is unharmed: a good request still works.
  EXPECT_TRUE(Generate(server.stub(), TokenRequest({1, 5}, 4)).status.ok());
}

TEST(Validation, StopStringEndsBeforeTheMatch) {
  MOESERVE_SKIP_WITHOUT_TOKENIZER();
  TestServer server;
  // Find the greedy text first, then stop on a piece of it.
  v1::GenerateRequest r;
  r.set_text("The router picks");
  r.set_max_new_tokens(24);
  r.set_ignore_eos(true);
  const GenerateResult full = Generate(server.stub(), r);
  ASSERT_TRUE(full.status.ok());
  ASSERT_GE(full.text.size(), 12u);
  const std::string stop = full.text.substr(full.text.size() / 2, 3);
  r.add_stop(stop);
  const GenerateResult stopped = Generate(server.stub(), r);
  ASSERT_TRUE(stopped.status.ok());
  EXPECT_EQ(stopped.finish, v1::STOP_SEQUENCE);
  EXPECT_EQ(stopped.text, full.text.substr(0, full.text.find(stop)));
}

TEST(Validation, ExpertBudgetLowersRealisedActivation) {
  TestServer server;
  const int vocab = static_cast<int>(server.Info().vocab_size());
  v1::GenerateRequest exact = TokenRequest(RandomPrompt(16, vocab, 21), 8);
  v1::GenerateRequest budget = exact;
  budget.mutable_expert_budget()->set_min_weight(0.05f);
  const GenerateResult a = Generate(server.stub(), exact), b = Generate(server.stub(), budget);
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  ASSERT_EQ(a.last.moe_stats().layers_size(), b.last.moe_stats().layers_size());
  for (int i = 0; i < a.last.moe_stats().layers_size(); ++i) {
    EXPECT_LT(b.last.moe_stats().layers(i).mean_active_experts(), a.last.moe_stats().layers(i).mean_active_experts());
  }
  // An empty budget message is exact: the same tokens as no budget at all.
  v1::GenerateRequest empty = exact;
  empty.mutable_expert_budget();
  EXPECT_EQ(Generate(server.stub(), empty).tokens, a.tokens);
}

TEST(Validation, StopTokenEndsGeneration) {
  TestServer server;
  const int vocab = static_cast<int>(server.Info().vocab_size());
  v1::GenerateRequest r = TokenRequest(RandomPrompt(6, vocab, 11), 20);
  const GenerateResult full = Generate(server.stub(), r);
  ASSERT_TRUE(full.status.ok());
  r.add_stop_token_ids(full.tokens[5]);
  const GenerateResult stopped = Generate(server.stub(), r);
  EXPECT_EQ(stopped.finish, v1::STOP_TOKEN);
  const auto first = std::find(full.tokens.begin(), full.tokens.end(), full.tokens[5]);
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>(full.tokens.begin(), first + 1));
}

}  // namespace
}  // namespace moeserve::testing
