#include "scheduler/batch_planner.h"

#include <algorithm>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/check.h"
#include "scheduler/ngram_drafter.h"

namespace moeserve {

uint64_t PrefixCacheSalt(const EngineInfo& info) {
  return absl::HashOf(info.architecture, info.total_parameters, info.vocab_size, info.num_layers,
                      static_cast<int>(info.dtype), static_cast<int>(info.kv.dtype), info.kv.block_size);
}

BatchPlanner::BatchPlanner(const SchedulerOptions& options, int64_t num_blocks, int block_size, uint64_t cache_salt)
    : options_(options), blocks_(num_blocks), block_size_(block_size), cache_salt_(cache_salt) {}

uint64_t BatchPlanner::BlockHash(Sequence& seq, int64_t i) const {
  while (static_cast<int64_t>(seq.block_hashes.size()) <= i) {
    const int64_t j = static_cast<int64_t>(seq.block_hashes.size());
    const uint64_t parent = j == 0 ? cache_salt_ : seq.block_hashes.back();
    seq.block_hashes.push_back(absl::HashOf(parent, absl::MakeConstSpan(seq.tokens.data() + j * block_size_,
                                                                        static_cast<size_t>(block_size_))));
  }
  return seq.block_hashes[i];
}

int64_t BatchPlanner::MatchPrefix(Sequence& seq) {
  if (!options_.prefix_cache || !seq.params.prefix_cache || seq.computed != 0 || !seq.blocks.empty()) return 0;
  const int64_t max_blocks = (static_cast<int64_t>(seq.tokens.size()) - 1) / block_size_;
  for (int64_t i = 0; i < max_blocks; ++i) {
    const uint64_t parent = i == 0 ? cache_salt_ : BlockHash(seq, i - 1);
    const std::optional<int32_t> block = blocks_.Acquire(
        BlockHash(seq, i), parent,
        std::span<const int32_t>(seq.tokens.data() + i * block_size_, static_cast<size_t>(block_size_)));
    if (!block.has_value()) break;
    seq.blocks.push_back(*block);
  }
  seq.published_blocks = static_cast<int64_t>(seq.blocks.size());
  seq.computed = seq.published_blocks * block_size_;
  return seq.computed;
}

int64_t BatchPlanner::PlanDraft(Sequence& seq, int64_t budget, int decoding) {
  seq.draft.clear();
  if (seq.max_draft <= 0 || decoding > options_.speculative_max_batch) return 1;
  // Never past max_new_tokens: each accepted draft token is one generated token, and the step
  // adds one more of its own.
  const int64_t room = std::min<int64_t>({seq.max_draft, seq.params.max_new_tokens - seq.generated() - 1, budget - 1,
                                          options_.prefill_chunk - 1});
  if (room <= 0) return 1;
  seq.draft = ProposeDraft(seq.tokens, static_cast<int>(room));
  if (seq.draft.empty()) return 1;
  const int64_t n = 1 + static_cast<int64_t>(seq.draft.size());
  const int64_t needed = BlocksFor(seq.computed + n) - static_cast<int64_t>(seq.blocks.size());
  if (needed > 0 && needed > blocks_.num_free()) {
    seq.draft.clear();  // speculation never preempts anyone
    return 1;
  }
  return n;
}

void BatchPlanner::AfterVerification(Sequence& seq, int drafted, int accepted) {
  spec_stats_.draft_tokens += drafted;
  spec_stats_.accepted_tokens += accepted;
  const int64_t keep = BlocksFor(static_cast<int64_t>(seq.tokens.size()));
  if (static_cast<int64_t>(seq.blocks.size()) > keep) {
    std::vector<int32_t> tail(seq.blocks.begin() + keep, seq.blocks.end());
    blocks_.Free(tail);
    seq.blocks.resize(keep);
  }
  seq.draft.clear();
}

void BatchPlanner::PublishComputed(const std::vector<PlannedChunk>& plan) {
  if (!options_.prefix_cache) return;
  for (const PlannedChunk& c : plan) {
    Sequence& seq = *c.seq;
    if (!seq.params.prefix_cache) continue;
    const int64_t full = seq.computed / block_size_;
    for (int64_t i = seq.published_blocks; i < full; ++i) {
      const uint64_t parent = i == 0 ? cache_salt_ : BlockHash(seq, i - 1);
      blocks_.Publish(seq.blocks[i], BlockHash(seq, i), parent,
                      std::span<const int32_t>(seq.tokens.data() + i * block_size_, static_cast<size_t>(block_size_)));
    }
    seq.published_blocks = std::max(seq.published_blocks, full);
  }
}

void BatchPlanner::AddWaiting(std::unique_ptr<Sequence> seq) {
  auto pos = std::find_if(waiting_.begin(), waiting_.end(),
                          [&](const std::unique_ptr<Sequence>& w) { return seq->RunsBefore(*w); });
  waiting_.insert(pos, std::move(seq));
}

std::unique_ptr<Sequence> BatchPlanner::Remove(uint64_t id) {
  std::unique_ptr<Sequence> seq;
  auto match = [id](const std::unique_ptr<Sequence>& s) { return s->id == id; };
  if (auto it = std::find_if(running_.begin(), running_.end(), match); it != running_.end()) {
    seq = std::move(*it);
    running_.erase(it);
  } else if (auto wit = std::find_if(waiting_.begin(), waiting_.end(), match); wit != waiting_.end()) {
    seq = std::move(*wit);
    waiting_.erase(wit);
  } else {
    return nullptr;
  }
  blocks_.Free(seq->blocks);
  return seq;
}

std::vector<uint64_t> BatchPlanner::Ids() const {
  std::vector<uint64_t> ids;
  for (const auto& s : running_) ids.push_back(s->id);
  for (const auto& s : waiting_) ids.push_back(s->id);
  return ids;
}

std::vector<uint64_t> BatchPlanner::Expired(Clock::time_point now) const {
  std::vector<uint64_t> expired;
  for (const auto& s : running_) {
    if (s->params.deadline && *s->params.deadline <= now) expired.push_back(s->id);
  }
  for (const auto& s : waiting_) {
    if (s->params.deadline && *s->params.deadline <= now) expired.push_back(s->id);
  }
  return expired;
}

void BatchPlanner::Preempt(Sequence& victim) {
  blocks_.Free(victim.blocks);
  victim.draft.clear();
  victim.computed = 0;  // recompute prompt + generated tokens on resume (what is cached is reused)
  victim.published_blocks = 0;
  ++victim.preemptions;
  ++preemptions_;
  auto it = std::find_if(running_.begin(), running_.end(),
                         [&](const std::unique_ptr<Sequence>& s) { return s.get() == &victim; });
  MOESERVE_CHECK(it != running_.end(), absl::StrCat("preempted sequence ", victim.id, " is not running"));
  std::unique_ptr<Sequence> seq = std::move(*it);
  running_.erase(it);
  AddWaiting(std::move(seq));
}

bool BatchPlanner::EnsureBlocks(Sequence& seq, int64_t num_tokens) {
  const int64_t needed = BlocksFor(seq.computed + num_tokens) - static_cast<int64_t>(seq.blocks.size());
  return needed <= 0 || blocks_.Allocate(needed, seq.blocks);
}

std::vector<PlannedChunk> BatchPlanner::Plan() {
  std::vector<PlannedChunk> plan;
  int64_t budget = options_.max_batch_tokens;
  std::sort(running_.begin(), running_.end(),
            [](const std::unique_ptr<Sequence>& a, const std::unique_ptr<Sequence>& b) { return a->RunsBefore(*b); });
  // Running sequences: decodes first, then continuing prefills. When blocks run out, the
  // lowest-precedence running sequence not yet planned is preempted (possibly this one).
  std::vector<Sequence*> order;
  for (const auto& s : running_) {
    s->draft.clear();
    if (s->pending() == 1) order.push_back(s.get());
  }
  const int decoding = static_cast<int>(order.size());
  for (const auto& s : running_) {
    if (s->pending() > 1) order.push_back(s.get());
  }
  std::vector<Sequence*> planned, preempted;
  for (Sequence* seq : order) {
    if (budget == 0) break;
    // Preempted earlier in this loop to make room: it is waiting again, not running.
    if (std::find(preempted.begin(), preempted.end(), seq) != preempted.end()) continue;
    const int64_t n = seq->pending() == 1 ? PlanDraft(*seq, budget, decoding)
                                          : std::min<int64_t>({seq->pending(), budget, options_.prefill_chunk});
    bool self_preempted = false;
    while (!EnsureBlocks(*seq, n)) {
      Sequence* victim = nullptr;
      for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
        if (std::find(planned.begin(), planned.end(), it->get()) == planned.end()) {
          victim = it->get();
          break;
        }
      }
      // seq itself is running and unplanned, so a victim always exists.
      MOESERVE_CHECK(victim != nullptr, absl::StrCat("no preemption victim for sequence ", seq->id));
      if (victim == seq) self_preempted = true;
      preempted.push_back(victim);
      Preempt(*victim);
      if (self_preempted) break;
    }
    if (self_preempted) continue;
    planned.push_back(seq);
    plan.push_back({seq, n});
    budget -= n;
  }
  // Admit waiting sequences in precedence order while budget, slots and blocks allow.
  while (budget > 0 && !waiting_.empty() && static_cast<int>(running_.size()) < options_.max_running) {
    Sequence& seq = *waiting_.front();
    const bool first = seq.scheduled_at == Clock::time_point{};
    const int64_t hit = MatchPrefix(seq);
    const int64_t n = std::min<int64_t>({seq.pending(), budget, options_.prefill_chunk});
    if (!EnsureBlocks(seq, n)) {
      blocks_.Free(seq.blocks);  // the cached prefix too: it waits holding nothing
      seq.computed = 0;
      seq.published_blocks = 0;
      break;
    }
    if (first) {
      seq.scheduled_at = Clock::now();
      if (options_.prefix_cache && seq.params.prefix_cache) {
        prefix_stats_.queried_tokens += seq.prompt_len;
        prefix_stats_.hit_tokens += std::min<int64_t>(hit, seq.prompt_len);
      }
    }
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    plan.push_back({running_.back().get(), n});
    budget -= n;
  }
  return plan;
}

}  // namespace moeserve
