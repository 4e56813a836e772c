#include "tests/scheduler/fake_engine.h"

#include "absl/strings/str_cat.h"
#include "engine/logits_rows.h"

namespace moeserve::testing {

FakeEngine::FakeEngine(int64_t num_blocks) {
  info_.architecture = "fake";
  info_.router = "relu";
  info_.num_layers = 2;
  info_.moe_layers = {{kMoeLayer, kExperts}};
  info_.num_experts = kExperts;
  info_.vocab_size = kVocab;
  info_.max_context = 256;
  info_.eos_token_ids = {};
  info_.kv.num_layers = 2;
  info_.kv.num_kv_heads = 1;
  info_.kv.head_dim = 4;
  info_.kv.block_size = kBlockSize;
  info_.kv.num_blocks = num_blocks;
}

absl::Status FakeEngine::Forward(const ForwardBatch& batch, ForwardOutput* out) {
  std::vector<ChunkRecord> step;
  std::set<int32_t> written;  // blocks a chunk writes keys and values into
  int64_t T = 0;
  for (const SequenceChunk& c : batch.chunks) {
    step.push_back({{c.tokens.begin(), c.tokens.end()}, c.start_position, {c.block_table.begin(), c.block_table.end()},
                    c.logits});
    T += static_cast<int64_t>(c.tokens.size());
    const int64_t end = c.start_position + static_cast<int64_t>(c.tokens.size());
    if (static_cast<int64_t>(c.block_table.size()) * kBlockSize < end) {
      violations_.push_back(absl::StrCat("step ", steps_.size(), ": table of ", c.block_table.size(),
                                         " blocks for ", end, " positions"));
    }
    for (size_t i = 0; i < c.block_table.size(); ++i) {
      const int32_t b = c.block_table[i];
      if (b < 0 || b >= info_.kv.num_blocks) {
        violations_.push_back(absl::StrCat("step ", steps_.size(), ": block ", b, " out of range"));
        continue;
      }
      const bool writes = static_cast<int64_t>(i + 1) * kBlockSize > c.start_position &&
                          static_cast<int64_t>(i) * kBlockSize < end;
      if (writes && !written.insert(b).second) {
        violations_.push_back(absl::StrCat("step ", steps_.size(), ": block ", b, " written by two sequences"));
      }
    }
  }
  // Prefix caching shares blocks, but only blocks nobody writes: a block one chunk writes must
  // appear in no other chunk's table.
  for (const SequenceChunk& c : batch.chunks) {
    const int64_t end = c.start_position + static_cast<int64_t>(c.tokens.size());
    for (size_t i = 0; i < c.block_table.size(); ++i) {
      const bool writes = static_cast<int64_t>(i + 1) * kBlockSize > c.start_position &&
                          static_cast<int64_t>(i) * kBlockSize < end;
      if (!writes && written.count(c.block_table[i]) > 0) {
        violations_.push_back(absl::StrCat("step ", steps_.size(), ": block ", c.block_table[i],
                                           " read by one sequence while another writes it"));
      }
    }
  }
  steps_.push_back(std::move(step));
  if (!fail_next_.ok()) {
    const absl::Status status = fail_next_;
    fail_next_ = absl::OkStatus();
    return status;
  }
  const std::vector<int32_t> rows = SelectLogitsRows(batch, kVocab, out);
  std::vector<int32_t> tokens;
  for (const SequenceChunk& c : batch.chunks) tokens.insert(tokens.end(), c.tokens.begin(), c.tokens.end());
  for (size_t r = 0; r < rows.size(); ++r) {
    float* logits = out->MutableLogits(static_cast<int64_t>(r));
    const int32_t last = tokens[rows[r]];
    if (spread_) {
      for (int v = 0; v < kVocab; ++v) logits[v] = -30.0f;
      for (int k = 0; k < 4; ++k) logits[(last + 1 + k) % kVocab] = kSpreadLogits[k];
    } else {
      for (int v = 0; v < kVocab; ++v) logits[v] = 0.0f;
      logits[Next(last)] = 10.0f;
    }
  }
  out->active_counts.assign(info_.num_layers * T, 0);
  for (int64_t t = 0; t < T; ++t) out->active_counts[kMoeLayer * T + t] = ActiveExperts(tokens[t]);
  return absl::OkStatus();
}

}  // namespace moeserve::testing
