// The scheduler's serving loop driven one iteration at a time (Scheduler::RunOnce) over a
// FakeEngine: step-by-step timelines of admission, chunked prefill, preemption, deadlines,
// aborts, engine failures and block accounting, with no model and no thread.
#include "scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>

#include "tests/scheduler/fake_engine.h"
#include "tests/scheduler/scheduler_test_util.h"

namespace moeserve::testing {
namespace {

struct Harness {
  explicit Harness(int64_t num_blocks, SchedulerOptions options = {})
      : engine(num_blocks), scheduler(&engine, nullptr, options) {}

  std::shared_ptr<RecordingSink> Add(RequestParams params, uint64_t* handle = nullptr) {
    auto sink = std::make_shared<RecordingSink>();
    auto id = scheduler.Enqueue(std::move(params), sink);
    EXPECT_TRUE(id.ok()) << id.status();
    if (handle != nullptr && id.ok()) *handle = *id;
    return sink;
  }
  // Runs iterations until nothing is left (at most `limit`), checking the blocks after each.
  int RunUntilIdle(int limit = 200) {
    int n = 0;
    while (!scheduler.Idle() && n < limit) {
      scheduler.RunOnce();
      ++n;
      EXPECT_TRUE(engine.violations().empty()) << engine.violations().front();
    }
    return n;
  }
  int64_t FreeBlocks() const { return scheduler.GetStats().kv_blocks_free; }

  FakeEngine engine;
  Scheduler scheduler;
};

// (start position, token count) of each chunk of a step.
std::vector<std::pair<int32_t, size_t>> Shape(const std::vector<ChunkRecord>& step) {
  std::vector<std::pair<int32_t, size_t>> shape;
  for (const ChunkRecord& c : step) shape.emplace_back(c.start_position, c.tokens.size());
  return shape;
}

TEST(Scheduler, GeneratesTheEngineGreedyContinuationAndCountsMoeActivations) {
  Harness h(64);
  auto sink = h.Add(Request(10, 3, 4));
  h.RunUntilIdle();
  ASSERT_EQ(sink->finish(), FinishReason::kLength);
  EXPECT_EQ(sink->tokens(), (std::vector<int32_t>{13, 14, 15, 16}));
  const TokenEvent& last = sink->events.back();
  EXPECT_EQ(last.prompt_tokens, 3);
  EXPECT_EQ(last.completion_tokens, 4);
  // The KV cache holds prompt + generated − 1 tokens: the last sampled token is never computed.
  ASSERT_EQ(last.moe_stats.size(), 1u);
  EXPECT_EQ(last.moe_stats[0].layer, FakeEngine::kMoeLayer);
  EXPECT_EQ(last.moe_stats[0].num_experts, FakeEngine::kExperts);
  EXPECT_EQ(last.moe_stats[0].tokens, 6u);
  uint64_t expected = 0;
  for (int32_t t : {10, 11, 12, 13, 14, 15}) expected += FakeEngine::ActiveExperts(t);
  EXPECT_EQ(last.moe_stats[0].activations, expected);
  EXPECT_EQ(h.FreeBlocks(), 64);
}

// A client that reads the metrics when its last event arrives finds every token of the
// request counted: the step is reported to the observer before the final events go out.
TEST(Scheduler, TheStepIsReportedBeforeItsFinalEventsGoOut) {
  struct CountingObserver : SchedulerObserver {
    void OnStep(const StepReport& report) override { generated += report.generated_tokens; }
    int64_t generated = 0;
  } observer;
  // Records how many tokens the observer had counted when the final event arrived.
  struct CheckingSink : RequestSink {
    explicit CheckingSink(const CountingObserver* o) : observer(o) {}
    void OnEvent(TokenEvent event) override {
      tokens += static_cast<int64_t>(event.token_ids.size());
      if (event.finish != FinishReason::kNone) counted_at_finish = observer->generated;
    }
    const CountingObserver* observer;
    int64_t tokens = 0, counted_at_finish = -1;
  };
  FakeEngine engine(64);
  Scheduler scheduler(&engine, nullptr, SchedulerOptions{}, &observer);
  auto sink = std::make_shared<CheckingSink>(&observer);
  ASSERT_TRUE(scheduler.Enqueue(Request(10, 3, 4), sink).ok());
  for (int i = 0; i < 50 && !scheduler.Idle(); ++i) scheduler.RunOnce();
  ASSERT_EQ(sink->tokens, 4);
  EXPECT_EQ(sink->counted_at_finish, 4);
}

TEST(Scheduler, AdmitsByPriorityThenArrival) {
  SchedulerOptions o;
  o.max_running = 1;
  Harness h(64, o);
  auto low = h.Add(Request(1, 2, 1, /*priority=*/0));
  auto high1 = h.Add(Request(20, 2, 1, /*priority=*/5));
  auto high2 = h.Add(Request(40, 2, 1, /*priority=*/5));
  h.RunUntilIdle();
  ASSERT_EQ(h.engine.steps().size(), 3u);
  EXPECT_EQ(h.engine.steps()[0][0].tokens.front(), 20);
  EXPECT_EQ(h.engine.steps()[1][0].tokens.front(), 40);
  EXPECT_EQ(h.engine.steps()[2][0].tokens.front(), 1);
  for (const auto& s : {low, high1, high2}) EXPECT_EQ(s->finish(), FinishReason::kLength);
}

TEST(Scheduler, ChunksPrefillAtTheChunkAndBatchLimitsAndPutsDecodesFirst) {
  SchedulerOptions o;
  o.prefill_chunk = 4;
  o.max_batch_tokens = 6;
  Harness h(64, o);
  auto a = h.Add(Request(0, 5, 3));
  h.scheduler.RunOnce();  // a: prefill [0, 4)
  auto b = h.Add(Request(30, 10, 2));
  h.scheduler.RunOnce();  // a: last prompt token; b: [0, 4) within the batch budget (1 + 4 <= 6)
  h.scheduler.RunOnce();  // a: decode first, then b: [4, 8)
  h.scheduler.RunOnce();  // a: decode, b: [8, 10) with logits
  h.RunUntilIdle();
  const auto& steps = h.engine.steps();
  using S = std::vector<std::pair<int32_t, size_t>>;
  EXPECT_EQ(Shape(steps[0]), (S{{0, 4}}));
  EXPECT_EQ(Shape(steps[1]), (S{{4, 1}, {0, 4}}));
  EXPECT_EQ(Shape(steps[2]), (S{{5, 1}, {4, 4}}));
  EXPECT_EQ(Shape(steps[3]), (S{{6, 1}, {8, 2}}));
  // Logits only where a chunk reaches the end of the known tokens.
  EXPECT_EQ(steps[0][0].logits, LogitsMode::kNone);
  EXPECT_EQ(steps[1][0].logits, LogitsMode::kLast);
  EXPECT_EQ(steps[2][1].logits, LogitsMode::kNone);
  EXPECT_EQ(steps[3][1].logits, LogitsMode::kLast);
  EXPECT_EQ(a->tokens(), (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(b->tokens(), (std::vector<int32_t>{40, 41}));
}

TEST(Scheduler, PreemptsTheLowestPrecedenceSequenceAndRecomputesItWithTheSameTokens) {
  // 6 blocks of 4 tokens: two sequences of 8 prompt + 8 new tokens need 4 blocks each. Without
  // the prefix cache, a recompute starts from position 0.
  SchedulerOptions o;
  o.prefix_cache = false;
  Harness h(6, o);
  auto first = h.Add(Request(0, 8, 8));
  auto second = h.Add(Request(32, 8, 8));
  h.RunUntilIdle();
  ASSERT_EQ(first->finish(), FinishReason::kLength);
  ASSERT_EQ(second->finish(), FinishReason::kLength);
  EXPECT_EQ(first->tokens(), (std::vector<int32_t>{8, 9, 10, 11, 12, 13, 14, 15}));
  EXPECT_EQ(second->tokens(), (std::vector<int32_t>{40, 41, 42, 43, 44, 45, 46, 47}));
  EXPECT_GE(h.scheduler.GetStats().preemptions, 1u);
  // The later arrival was the victim: after its preemption it restarts from position 0 with its
  // prompt and the tokens it had generated.
  bool recomputed = false;
  for (const auto& step : h.engine.steps()) {
    for (const ChunkRecord& c : step) {
      if (c.start_position == 0 && c.tokens.front() == 32 && c.tokens.size() > 8) recomputed = true;
    }
  }
  EXPECT_TRUE(recomputed);
  EXPECT_EQ(h.FreeBlocks(), 6);
}

TEST(Scheduler, DeadlinesEndRunningAndWaitingRequests) {
  SchedulerOptions o;
  o.max_running = 1;
  Harness h(64, o);
  auto running = h.Add(Request(0, 4, 50));
  h.scheduler.RunOnce();
  RequestParams waiting_params = Request(10, 4, 5);
  waiting_params.deadline = Clock::now() - std::chrono::seconds(1);
  auto waiting = h.Add(std::move(waiting_params));
  h.scheduler.RunOnce();
  EXPECT_EQ(waiting->finish(), FinishReason::kDeadline);
  EXPECT_EQ(waiting->final_events(), 1);
  EXPECT_FALSE(running->finished());
  h.scheduler.RunOnce();
  EXPECT_EQ(h.scheduler.GetStats().running, 1);
}

TEST(Scheduler, AbortEndsARequestOnceInEveryState) {
  SchedulerOptions o;
  o.max_running = 2;
  o.prefill_chunk = 4;
  Harness h(64, o);
  uint64_t in_inbox, waiting, prefilling, decoding;
  auto decode_sink = h.Add(Request(0, 2, 50), &decoding);
  h.scheduler.RunOnce();  // decoding: prompt computed, first token out
  auto prefill_sink = h.Add(Request(10, 12, 5), &prefilling);
  h.scheduler.RunOnce();  // prefilling: 4 of 12 prompt tokens computed
  auto waiting_sink = h.Add(Request(30, 4, 5), &waiting);
  h.scheduler.RunOnce();  // waiting: no free slot
  auto inbox_sink = h.Add(Request(40, 4, 5), &in_inbox);
  ASSERT_EQ(h.scheduler.GetStats().running, 2);
  ASSERT_EQ(h.scheduler.GetStats().waiting, 1);
  for (uint64_t id : {in_inbox, waiting, prefilling, decoding}) h.scheduler.Abort(id, FinishReason::kCancelled);
  h.scheduler.Abort(decoding, FinishReason::kCancelled);  // twice: ignored
  h.scheduler.RunOnce();
  for (const auto& s : {inbox_sink, waiting_sink, prefill_sink, decode_sink}) {
    EXPECT_EQ(s->finish(), FinishReason::kCancelled);
    EXPECT_EQ(s->final_events(), 1);
  }
  EXPECT_EQ(h.FreeBlocks(), 64);
  EXPECT_TRUE(h.scheduler.Idle());
}

TEST(Scheduler, AFailedStepEndsOnlyItsSequencesWithTheError) {
  SchedulerOptions o;
  o.max_running = 1;
  Harness h(64, o);
  auto failed = h.Add(Request(0, 3, 4));
  auto later = h.Add(Request(20, 3, 2));
  h.engine.FailNextStep(absl::InternalError("device lost"));
  h.RunUntilIdle();
  EXPECT_EQ(failed->finish(), FinishReason::kError);
  EXPECT_EQ(failed->events.back().error, "device lost");
  EXPECT_EQ(later->finish(), FinishReason::kLength);
  EXPECT_EQ(later->tokens(), (std::vector<int32_t>{23, 24}));
  EXPECT_EQ(h.FreeBlocks(), 64);
}

TEST(Scheduler, BlocksInUseMatchTheSequencesAfterEveryStep) {
  SchedulerOptions o;
  o.max_batch_tokens = 8;
  o.prefill_chunk = 5;
  Harness h(12, o);
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int i = 0; i < 6; ++i) sinks.push_back(h.Add(Request(i * 9, 3 + i, 4 + (i % 3))));
  for (int step = 0; step < 300 && !h.scheduler.Idle(); ++step) {
    h.scheduler.RunOnce();
    // Every running sequence is in each step here (the budget covers them), so the blocks in
    // use are exactly the blocks of the step's tables, each covering its chunk's positions.
    const auto& chunks = h.engine.steps().back();
    int64_t used = 0;
    for (const ChunkRecord& c : chunks) {
      const int64_t end = c.start_position + static_cast<int64_t>(c.tokens.size());
      EXPECT_EQ(static_cast<int64_t>(c.blocks.size()), (end + FakeEngine::kBlockSize - 1) / FakeEngine::kBlockSize);
      used += static_cast<int64_t>(c.blocks.size());
    }
    const SchedulerStats stats = h.scheduler.GetStats();
    int still_running = 0;
    for (const auto& s : sinks) still_running += !s->finished();
    if (stats.running == static_cast<int>(chunks.size()) && stats.running == still_running) {
      // Nothing finished in this step: the blocks used are exactly the step's tables.
      EXPECT_EQ(stats.kv_blocks_total - stats.kv_blocks_free, used) << "step " << step;
    }
    EXPECT_TRUE(h.engine.violations().empty());
  }
  for (size_t i = 0; i < sinks.size(); ++i) EXPECT_EQ(sinks[i]->finish(), FinishReason::kLength) << i;
  EXPECT_EQ(h.FreeBlocks(), 12);
}

TEST(Scheduler, RefusesWhatCanNeverRunAndWhatExceedsTheQueue) {
  SchedulerOptions o;
  o.max_waiting = 2;
  Harness h(4, o);
  auto sink = std::make_shared<RecordingSink>();
  // 4 blocks of 4 tokens hold 16 positions.
  EXPECT_TRUE(absl::IsInvalidArgument(h.scheduler.Enqueue(Request(0, 10, 7), sink).status()));
  EXPECT_TRUE(h.scheduler.Enqueue(Request(0, 2, 2), sink).ok());
  EXPECT_TRUE(h.scheduler.Enqueue(Request(0, 2, 2), sink).ok());
  EXPECT_TRUE(absl::IsResourceExhausted(h.scheduler.Enqueue(Request(0, 2, 2), sink).status()));
  h.scheduler.Drain();
  EXPECT_TRUE(absl::IsUnavailable(h.scheduler.Enqueue(Request(0, 2, 2), sink).status()));
}

TEST(Scheduler, ARepeatedPromptSkipsItsCachedBlocksAndGivesTheSameTokens) {
  Harness h(64);
  auto first = h.Add(Request(0, 12, 3));
  h.RunUntilIdle();
  const size_t steps_before = h.engine.steps().size();
  auto second = h.Add(Request(0, 12, 3));
  h.RunUntilIdle();
  EXPECT_EQ(second->tokens(), first->tokens());
  // 12 prompt tokens, blocks of 4: two full blocks are reused (the third holds the last prompt
  // token, which is recomputed for its logits).
  const ChunkRecord& c = h.engine.steps()[steps_before][0];
  EXPECT_EQ(c.start_position, 8);
  EXPECT_EQ(c.tokens.size(), 4u);
  // Cached tokens are not routed again: MoE totals count what was computed.
  EXPECT_EQ(first->events.back().moe_stats[0].tokens, 14u);
  EXPECT_EQ(second->events.back().moe_stats[0].tokens, 6u);
  EXPECT_EQ(h.FreeBlocks(), 64);
}

TEST(Scheduler, ARecomputeAfterPreemptionReusesTheVictimsCachedBlocks) {
  // Prompts go in one chunk each, so the only multi-token chunk that starts past position 0 is
  // a recompute from a cached prefix.
  Harness h(6);
  auto first = h.Add(Request(0, 4, 12));
  auto second = h.Add(Request(32, 4, 12));
  h.RunUntilIdle();
  ASSERT_EQ(first->finish(), FinishReason::kLength);
  ASSERT_EQ(second->finish(), FinishReason::kLength);
  EXPECT_EQ(second->tokens(), (std::vector<int32_t>{36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47}));
  ASSERT_GE(h.scheduler.GetStats().preemptions, 1u);
  // The victim's full blocks stayed cached while it waited: its recompute starts past them.
  bool resumed_past_zero = false;
  for (const auto& step : h.engine.steps()) {
    for (const ChunkRecord& c : step) resumed_past_zero |= c.tokens.size() > 1 && c.start_position > 0;
  }
  EXPECT_TRUE(resumed_past_zero);
  EXPECT_TRUE(h.engine.violations().empty());
}

TEST(Scheduler, PrefixCachingOffComputesEveryPromptToken) {
  SchedulerOptions o;
  o.prefix_cache = false;
  Harness h(64, o);
  auto first = h.Add(Request(0, 12, 3));
  h.RunUntilIdle();
  const size_t steps_before = h.engine.steps().size();
  auto second = h.Add(Request(0, 12, 3));
  h.RunUntilIdle();
  EXPECT_EQ(second->tokens(), first->tokens());
  EXPECT_EQ(h.engine.steps()[steps_before][0].start_position, 0);
  EXPECT_EQ(second->events.back().moe_stats[0].tokens, 14u);
}

// ---- speculative decoding ----

TEST(SchedulerSpeculative, GreedyOutputEqualsNoSpeculationInFewerSteps) {
  // The prompt repeats its start, so its last three tokens find a draft: 13 14 15 10.
  RequestParams p = Request(10, 6, 8);
  for (int32_t t : {10, 11, 12}) p.prompt.push_back(t);
  SchedulerOptions off;
  Harness plain(64, off);
  auto expected = plain.Add(p);
  plain.RunUntilIdle();
  SchedulerOptions on;
  on.speculative_max_draft = 4;
  Harness spec(64, on);
  auto got = spec.Add(p);
  spec.RunUntilIdle();
  EXPECT_EQ(got->tokens(), expected->tokens());
  EXPECT_EQ(got->tokens(), (std::vector<int32_t>{13, 14, 15, 16, 17, 18, 19, 20}));
  EXPECT_LT(spec.engine.steps().size(), plain.engine.steps().size());
  // The prefill samples 13; the first decode then looks up (11 12 13), drafts what followed it
  // (14 15 10 11) and verifies [13 | 14 15 10 11] with logits for every row: two accepted, the
  // third replaced by the model's own 16.
  const ChunkRecord& verify = spec.engine.steps()[1][0];
  EXPECT_EQ(verify.start_position, 9);
  EXPECT_EQ(verify.tokens, (std::vector<int32_t>{13, 14, 15, 10, 11}));
  EXPECT_EQ(verify.logits, LogitsMode::kAll);
  EXPECT_EQ(spec.engine.steps()[2][0].start_position, 12);  // 13 14 15 kept; 16 comes next
  EXPECT_GE(spec.scheduler.GetStats().spec_accepted_tokens, 2u);
  EXPECT_GT(spec.scheduler.GetStats().spec_draft_tokens, spec.scheduler.GetStats().spec_accepted_tokens);
  // Rejected drafts gave their blocks back; the request's MoE totals count every routed token.
  EXPECT_EQ(spec.FreeBlocks(), 64);
  EXPECT_TRUE(spec.engine.violations().empty());
}

TEST(SchedulerSpeculative, ARequestCanTurnItOffAndABusyStepDoesNotSpeculate) {
  RequestParams p = Request(10, 6, 4);
  for (int32_t t : {10, 11, 12}) p.prompt.push_back(t);
  SchedulerOptions o;
  o.speculative_max_draft = 4;
  o.speculative_max_batch = 1;
  Harness h(64, o);
  RequestParams opted_out = p;
  opted_out.max_draft_tokens = 0;
  h.Add(opted_out);
  h.RunUntilIdle();
  EXPECT_EQ(h.scheduler.GetStats().spec_draft_tokens, 0u);
  h.Add(p);
  h.Add(p);  // two decoding sequences > speculative_max_batch
  h.RunUntilIdle();
  EXPECT_EQ(h.scheduler.GetStats().spec_draft_tokens, 0u);
}

// Sampling: speculative rejection sampling leaves the output distribution unchanged. The fake
// model's next token is the last + 1 .. + 4 with fixed probabilities (kSpreadLogits), so the
// steps between consecutive tokens are independent draws of that distribution. After the
// prefill's token t0, a draft is verified when t0 recurs in the prompt: after 7 the lookup
// drafts 8 (right half the time), after 8 it drafts 5 (never right). The joint frequency of
// the two steps that follow t0 over many seeded requests must match the exact distribution.
TEST(SchedulerSpeculative, SamplingKeepsTheModelsDistribution) {
  constexpr int kRequests = 8000;
  SchedulerOptions o;
  o.max_waiting = kRequests;
  o.max_running = 512;
  o.max_batch_tokens = 4096;
  o.speculative_max_draft = 3;
  o.speculative_max_batch = 1 << 20;
  Harness h(4096, o);
  h.engine.set_spread(true);
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int i = 0; i < kRequests; ++i) {
    RequestParams p;
    p.prompt = {5, 6, 7, 8, 5, 6};  // the suffix (5, 6) drafts 7 8 5
    p.max_new_tokens = 3;
    p.sampling.temperature = 1.0f;
    p.sampling.seed = 1000 + i;
    sinks.push_back(h.Add(std::move(p)));
  }
  h.RunUntilIdle(1000);
  double softmax[4], z = 0;
  for (int k = 0; k < 4; ++k) z += std::exp(double{FakeEngine::kSpreadLogits[k]});
  for (int k = 0; k < 4; ++k) softmax[k] = std::exp(double{FakeEngine::kSpreadLogits[k]}) / z;
  std::map<std::pair<int, int>, int> counts;
  for (const auto& s : sinks) {
    const std::vector<int32_t> t = s->tokens();
    ASSERT_EQ(t.size(), 3u);
    const int b = (t[1] - t[0] + FakeEngine::kVocab) % FakeEngine::kVocab - 1;
    const int c = (t[2] - t[1] + FakeEngine::kVocab) % FakeEngine::kVocab - 1;
    ASSERT_TRUE(b >= 0 && b < 4 && c >= 0 && c < 4) << t[0] << " " << t[1] << " " << t[2];
    ++counts[{b, c}];
  }
  // Pearson's chi-square over the 16 pairs (15 degrees of freedom; the 0.999 quantile is 37.7).
  double chi2 = 0;
  for (int a = 0; a < 4; ++a) {
    for (int b = 0; b < 4; ++b) {
      const double expected = kRequests * softmax[a] * softmax[b];
      const double d = counts[{a, b}] - expected;
      chi2 += d * d / expected;
    }
  }
  EXPECT_LT(chi2, 37.7);
  // Both sides of the verification ran: drafts were accepted and rejected.
  const SchedulerStats stats = h.scheduler.GetStats();
  EXPECT_GT(stats.spec_accepted_tokens, 0u);
  EXPECT_LT(stats.spec_accepted_tokens, stats.spec_draft_tokens);
}

}  // namespace
}  // namespace moeserve::testing
