// An Engine with no model, for driving the scheduler step by step: deterministic logits (the
// next token is always the last token + 1, modulo the vocabulary), a fixed per-token MoE
// activation, the real engine's batch validation, and a record of every step it was given.
#ifndef MOESERVE_TESTS_SCHEDULER_FAKE_ENGINE_H_
#define MOESERVE_TESTS_SCHEDULER_FAKE_ENGINE_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/engine.h"

namespace moeserve::testing {

// One chunk of a step as the engine saw it.
struct ChunkRecord {
  std::vector<int32_t> tokens;
  int32_t start_position = 0;
  std::vector<int32_t> blocks;
  LogitsMode logits = LogitsMode::kLast;
};

class FakeEngine final : public Engine {
 public:
  static constexpr int kVocab = 64;
  static constexpr int kBlockSize = 4;
  static constexpr int kMoeLayer = 1;    // layer 0 is dense, layer 1 has kExperts routed experts
  static constexpr int kExperts = 8;

  explicit FakeEngine(int64_t num_blocks);

  absl::Status Forward(const ForwardBatch& batch, ForwardOutput* out) override;
  const EngineInfo& info() const override { return info_; }
  void set_observer(EngineObserver*) override {}

  // The greedy continuation of `token`.
  static int32_t Next(int32_t token) { return (token + 1) % kVocab; }
  // With a spread distribution (for sampling tests), the next token after `token` is
  // token + 1, + 2, + 3 or + 4 (mod the vocabulary) with these logits; every other token has
  // probability e^-30 relative to the best.
  static constexpr float kSpreadLogits[4] = {1.5f, 1.0f, 0.25f, -0.5f};
  void set_spread(bool spread) { spread_ = spread; }
  // |A| the fake reports for a token at the MoE layer.
  static int32_t ActiveExperts(int32_t token) { return 1 + token % 3; }

  // Every step so far, in order.
  const std::vector<std::vector<ChunkRecord>>& steps() const { return steps_; }
  // The next Forward fails with this status (once).
  void FailNextStep(absl::Status status) { fail_next_ = std::move(status); }
  // Problems seen in the batches (a block written by one sequence and in another's table, a
  // table too short, a block out of range); empty if none.
  const std::vector<std::string>& violations() const { return violations_; }

 private:
  EngineInfo info_;
  bool spread_ = false;
  std::vector<std::vector<ChunkRecord>> steps_;
  absl::Status fail_next_;
  std::vector<std::string> violations_;
};

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_SCHEDULER_FAKE_ENGINE_H_
