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

}  // namespace
}  // namespace moeserve::testing
