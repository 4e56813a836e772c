// BatchPlanner on its own: admission against slots and blocks, preemption (including of the
// sequence being planned), and block ownership through Remove.
#include "scheduler/batch_planner.h"

#include <gtest/gtest.h>

#include <memory>

#include "tests/scheduler/scheduler_test_util.h"

namespace moeserve::testing {
namespace {

std::unique_ptr<Sequence> MakeSequence(uint64_t id, int prompt_len, int max_new, int priority = 0) {
  return std::make_unique<Sequence>(id, Request(0, prompt_len, max_new, priority), std::make_shared<RecordingSink>(),
                                    nullptr);
}

// What the step processor does after a step: the planned tokens are in the cache, and a
// sequence whose chunk reached its end samples one more token.
void Compute(const std::vector<PlannedChunk>& plan) {
  for (const PlannedChunk& c : plan) {
    c.seq->computed += c.num_tokens;
    if (c.seq->computed == static_cast<int64_t>(c.seq->tokens.size())) c.seq->tokens.push_back(0);
  }
}

int64_t BlocksHeld(const std::vector<PlannedChunk>& plan) {
  int64_t n = 0;
  for (const PlannedChunk& c : plan) n += static_cast<int64_t>(c.seq->blocks.size());
  return n;
}

TEST(BatchPlanner, AdmitsWhileBlocksAllowAndNeverHoldsBlocksForAWaitingSequence) {
  SchedulerOptions o;
  BatchPlanner planner(o, /*num_blocks=*/5, /*block_size=*/4);
  planner.AddWaiting(MakeSequence(1, 8, 4));   // 2 blocks
  planner.AddWaiting(MakeSequence(2, 8, 4));   // 2 blocks
  planner.AddWaiting(MakeSequence(3, 8, 4));   // 2 blocks: does not fit
  const std::vector<PlannedChunk> plan = planner.Plan();
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].seq->id, 1u);
  EXPECT_EQ(plan[1].seq->id, 2u);
  EXPECT_EQ(planner.num_running(), 2);
  EXPECT_EQ(planner.num_waiting(), 1);
  EXPECT_EQ(planner.blocks().num_free(), 1);
  EXPECT_EQ(BlocksHeld(plan), 4);
}

TEST(BatchPlanner, PreemptsTheSequenceItPlansWhenNothingElseCanGiveWay) {
  SchedulerOptions o;
  BatchPlanner planner(o, /*num_blocks=*/2, /*block_size=*/4);
  planner.AddWaiting(MakeSequence(1, 8, 4));
  std::vector<PlannedChunk> plan = planner.Plan();
  ASSERT_EQ(plan.size(), 1u);
  Compute(plan);  // 8 computed, 9 known: the next decode needs a third block
  plan = planner.Plan();
  EXPECT_TRUE(plan.empty());
  EXPECT_EQ(planner.preemptions(), 1u);
  EXPECT_EQ(planner.num_running(), 0);
  EXPECT_EQ(planner.num_waiting(), 1);
  EXPECT_EQ(planner.blocks().num_free(), 2);
  std::unique_ptr<Sequence> seq = planner.Remove(1);
  ASSERT_NE(seq, nullptr);
  EXPECT_EQ(seq->computed, 0);
  EXPECT_EQ(seq->preemptions, 1);
}

TEST(BatchPlanner, PreemptsTheLowestPrecedenceRunningSequenceFirst) {
  SchedulerOptions o;
  BatchPlanner planner(o, /*num_blocks=*/4, /*block_size=*/4);
  planner.AddWaiting(MakeSequence(1, 8, 4, /*priority=*/0));
  planner.AddWaiting(MakeSequence(2, 8, 4, /*priority=*/1));
  std::vector<PlannedChunk> plan = planner.Plan();
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].seq->id, 2u);  // higher priority first
  Compute(plan);
  plan = planner.Plan();  // both need a third block; only the priority-1 sequence gets one
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].seq->id, 2u);
  EXPECT_EQ(planner.num_waiting(), 1);
  EXPECT_EQ(planner.blocks().num_free(), 1);
}

TEST(BatchPlanner, RemoveFreesBlocksWhereverTheSequenceIs) {
  SchedulerOptions o;
  o.max_running = 1;
  BatchPlanner planner(o, /*num_blocks=*/8, /*block_size=*/4);
  planner.AddWaiting(MakeSequence(1, 6, 2));
  planner.AddWaiting(MakeSequence(2, 6, 2));
  planner.Plan();
  EXPECT_EQ(planner.blocks().num_free(), 6);
  EXPECT_NE(planner.Remove(1), nullptr);  // running
  EXPECT_NE(planner.Remove(2), nullptr);  // waiting
  EXPECT_EQ(planner.Remove(2), nullptr);  // gone
  EXPECT_EQ(planner.blocks().num_free(), 8);
  EXPECT_TRUE(planner.Ids().empty());
}

// ---- prefix cache ----

TEST(BatchPlannerPrefixCache, ASecondSequenceSharesTheFullBlocksOfTheFirstsPrompt) {
  SchedulerOptions o;
  BatchPlanner planner(o, /*num_blocks=*/16, /*block_size=*/4);
  planner.AddWaiting(MakeSequence(1, 10, 4));
  std::vector<PlannedChunk> plan = planner.Plan();
  Compute(plan);
  planner.PublishComputed(plan);  // 10 computed: blocks 0 and 1 are full
  const std::vector<int32_t> first_blocks = plan[0].seq->blocks;
  planner.AddWaiting(MakeSequence(2, 10, 4));  // the same 10 prompt tokens
  plan = planner.Plan();
  ASSERT_EQ(plan.size(), 2u);
  const Sequence& second = *plan[1].seq;
  EXPECT_EQ(second.id, 2u);
  EXPECT_EQ(second.computed, 8);       // two cached blocks
  EXPECT_EQ(plan[1].num_tokens, 2);    // only tokens 8 and 9 are computed
  EXPECT_EQ(second.blocks[0], first_blocks[0]);
  EXPECT_EQ(second.blocks[1], first_blocks[1]);
  EXPECT_NE(second.blocks[2], first_blocks[2]);
  EXPECT_EQ(planner.blocks().references(first_blocks[0]), 2);
  EXPECT_EQ(planner.prefix_stats().queried_tokens, 20u);
  EXPECT_EQ(planner.prefix_stats().hit_tokens, 8u);
}

TEST(BatchPlannerPrefixCache, AWhollyCachedPromptStillComputesItsLastTokenInItsOwnBlock) {
  SchedulerOptions o;
  BatchPlanner planner(o, /*num_blocks=*/16, /*block_size=*/4);
  planner.AddWaiting(MakeSequence(1, 8, 4));
  std::vector<PlannedChunk> plan = planner.Plan();
  Compute(plan);
  planner.PublishComputed(plan);
  const std::vector<int32_t> first_blocks = plan[0].seq->blocks;
  EXPECT_TRUE(planner.Remove(1) != nullptr);
  EXPECT_EQ(planner.blocks().num_free(), 16);  // cached but idle blocks count as free
  EXPECT_EQ(planner.blocks().cached_blocks(), 2);
  planner.AddWaiting(MakeSequence(2, 8, 4));
  plan = planner.Plan();
  ASSERT_EQ(plan.size(), 1u);
  // Block 1 is cached too, but the last prompt token needs its logits: it is recomputed into a
  // block of the sequence's own, so nobody ever writes into a shared block.
  EXPECT_EQ(plan[0].seq->computed, 4);
  EXPECT_EQ(plan[0].num_tokens, 4);
  EXPECT_EQ(plan[0].seq->blocks[0], first_blocks[0]);
  EXPECT_NE(plan[0].seq->blocks[1], first_blocks[1]);
}

TEST(BatchPlannerPrefixCache, IdleCachedBlocksAreEvictedOnlyWhenTheFreeListRunsOut) {
  SchedulerOptions o;
  BatchPlanner planner(o, /*num_blocks=*/4, /*block_size=*/4);
  planner.AddWaiting(MakeSequence(1, 5, 1));
  std::vector<PlannedChunk> plan = planner.Plan();
  Compute(plan);
  planner.PublishComputed(plan);
  planner.Remove(1);
  ASSERT_EQ(planner.blocks().cached_blocks(), 1);
  // 3 free blocks plus the idle cached one: a 12-token prompt of other tokens takes the free
  // ones first, then the cached block is evicted for a fourth.
  auto other = std::make_unique<Sequence>(2, Request(100, 12, 1), std::make_shared<RecordingSink>(), nullptr);
  planner.AddWaiting(std::move(other));
  plan = planner.Plan();
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(planner.blocks().evictions(), 0u);
  EXPECT_EQ(planner.blocks().cached_blocks(), 1);
  Compute(plan);  // 12 computed, 13 known: the decode needs a fourth block
  plan = planner.Plan();
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(planner.blocks().evictions(), 1u);
  EXPECT_EQ(planner.blocks().cached_blocks(), 0);
}

TEST(BatchPlannerPrefixCache, ARequestThatOptsOutNeitherReusesNorPublishes) {
  SchedulerOptions o;
  BatchPlanner planner(o, /*num_blocks=*/16, /*block_size=*/4);
  auto opted_out = [](uint64_t id) {
    RequestParams p = Request(0, 10, 4);
    p.prefix_cache = false;
    return std::make_unique<Sequence>(id, std::move(p), std::make_shared<RecordingSink>(), nullptr);
  };
  planner.AddWaiting(opted_out(1));
  std::vector<PlannedChunk> plan = planner.Plan();
  Compute(plan);
  planner.PublishComputed(plan);
  EXPECT_EQ(planner.blocks().cached_blocks(), 0);
  planner.AddWaiting(MakeSequence(2, 10, 4));
  planner.PublishComputed(planner.Plan());
  planner.AddWaiting(opted_out(3));  // sequence 2 published the prompt; 3 still computes it all
  plan = planner.Plan();
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[2].seq->id, 3u);
  EXPECT_EQ(plan[2].seq->computed, 0);
  EXPECT_EQ(plan[2].num_tokens, 10);
}

}  // namespace
}  // namespace moeserve::testing
