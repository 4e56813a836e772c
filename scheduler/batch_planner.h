// Iteration-level batch planning: the waiting and running queues, the KV block allocator,
// chunked prefill and preemption by recompute. Plain state with no lock and no thread, so it
// can be driven step by step (tests/scheduler); the scheduler's loop is its only user.
#ifndef MOESERVE_SCHEDULER_BATCH_PLANNER_H_
#define MOESERVE_SCHEDULER_BATCH_PLANNER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "engine/engine_info.h"
#include "scheduler/block_allocator.h"
#include "scheduler/scheduler_options.h"
#include "scheduler/sequence.h"

namespace moeserve {

// One sequence's share of a step: its next `num_tokens` uncomputed tokens.
struct PlannedChunk {
  Sequence* seq;
  int64_t num_tokens;
};

// What a cached block's keys and values depend on besides its tokens: the model and the KV
// element type (one engine per process today; the salt keeps keys honest if that changes).
uint64_t PrefixCacheSalt(const EngineInfo& info);

class BatchPlanner {
 public:
  // `cache_salt` names the model and KV element type in every prefix-cache key.
  BatchPlanner(const SchedulerOptions& options, int64_t num_blocks, int block_size, uint64_t cache_salt = 0);

  // Blocks a sequence of `tokens` tokens needs.
  int64_t BlocksFor(int64_t tokens) const { return (tokens + block_size_ - 1) / block_size_; }

  // Queues a sequence among the waiting ones, in precedence order.
  void AddWaiting(std::unique_ptr<Sequence> seq);

  // Plans one step within max_batch_tokens: running decodes first, then continuing prefills,
  // then admissions from the waiting queue while slots and blocks allow. Allocates the blocks
  // the plan needs; where they run out, preempts the lowest-precedence running sequence not yet
  // planned (its blocks freed, it waits again and is recomputed later).
  std::vector<PlannedChunk> Plan();

  // After a step has computed `plan`: publishes every block its sequences have filled to the
  // prefix cache, so later requests (and recomputes) with the same prefix can reuse it.
  void PublishComputed(const std::vector<PlannedChunk>& plan);

  // Takes the sequence out wherever it is and frees its blocks; null when it is unknown
  // (already finished).
  std::unique_ptr<Sequence> Remove(uint64_t id);

  // Speculative decoding: gives back the blocks a sequence holds beyond what its known tokens
  // need (after drafts were rejected), and tallies drafted and accepted tokens.
  void AfterVerification(Sequence& seq, int drafted, int accepted);
  struct SpecStats {
    uint64_t draft_tokens = 0;
    uint64_t accepted_tokens = 0;
  };
  const SpecStats& spec_stats() const { return spec_stats_; }

  // Every running total at once, so that a step's report can take differences.
  struct Counters {
    uint64_t preemptions = 0, prefix_queried = 0, prefix_hits = 0, evictions = 0, drafted = 0, accepted = 0;
  };
  Counters counters() const {
    return {preemptions_, prefix_stats_.queried_tokens, prefix_stats_.hit_tokens, blocks_.evictions(),
            spec_stats_.draft_tokens, spec_stats_.accepted_tokens};
  }

  // Ids of every sequence present, running first, each queue in precedence order.
  std::vector<uint64_t> Ids() const;
  // Ids of the sequences whose deadline is at or before `now`.
  std::vector<uint64_t> Expired(Clock::time_point now) const;

  int num_running() const { return static_cast<int>(running_.size()); }
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  const BlockAllocator& blocks() const { return blocks_; }
  uint64_t preemptions() const { return preemptions_; }

  // Prefix-cache figures since the start: prompt tokens looked up at first admission, and how
  // many of them were found cached.
  struct PrefixStats {
    uint64_t queried_tokens = 0;
    uint64_t hit_tokens = 0;
  };
  const PrefixStats& prefix_stats() const { return prefix_stats_; }

 private:
  bool EnsureBlocks(Sequence& seq, int64_t num_tokens);
  void Preempt(Sequence& victim);
  // Takes the cached blocks of seq's longest cached prefix (never its last known token, which
  // must be computed for its logits, so seq never writes into a shared block); returns the
  // tokens they hold.
  int64_t MatchPrefix(Sequence& seq);
  // Proposes seq's draft for this step where speculation may pay and blocks are free for it
  // without preempting anyone; returns the chunk length (1 + draft).
  int64_t PlanDraft(Sequence& seq, int64_t budget, int decoding);
  // Content hash of full block `i` of seq's tokens (the chain: parent's hash, then the ids).
  uint64_t BlockHash(Sequence& seq, int64_t i) const;

  SchedulerOptions options_;
  BlockAllocator blocks_;
  int block_size_;
  std::deque<std::unique_ptr<Sequence>> waiting_;   // in precedence order
  std::vector<std::unique_ptr<Sequence>> running_;  // in precedence order after each Plan
  uint64_t preemptions_ = 0;
  uint64_t cache_salt_;
  PrefixStats prefix_stats_;
  SpecStats spec_stats_;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_BATCH_PLANNER_H_
