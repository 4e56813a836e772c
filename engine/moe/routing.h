// The output of a router for a batch of tokens, in CSR form: token t's evaluated experts are
// entries [offsets[t], offsets[t+1]). The count varies per token (no fixed k anywhere).
//
// "Evaluated" and "active" differ only for DECO's `normal` router norm, whose centring gives
// inactive experts a non-zero weight (spec deco.md §3.3 step 4): there every expert is
// evaluated, and `active` marks the set A that statistics report.
#ifndef MOESERVE_ENGINE_MOE_ROUTING_H_
#define MOESERVE_ENGINE_MOE_ROUTING_H_

#include <cstdint>
#include <vector>

namespace moeserve {

struct Routing {
  std::vector<int32_t> offsets = {0};  // size tokens + 1
  std::vector<int32_t> experts;        // ascending within a token
  std::vector<float> weights;          // combination weight of each entry
  std::vector<uint8_t> active;         // 1 if the entry is in the token's active set A
  std::vector<int32_t> num_active;     // |A| per token

  int64_t num_tokens() const { return static_cast<int64_t>(offsets.size()) - 1; }
  void Clear() {
    offsets.assign(1, 0);
    experts.clear();
    weights.clear();
    active.clear();
    num_active.clear();
  }
  void Add(int32_t expert, float weight, bool is_active) {
    experts.push_back(expert);
    weights.push_back(weight);
    active.push_back(is_active ? 1 : 0);
  }
  // Closes the current token.
  void EndToken(int32_t active_count) {
    offsets.push_back(static_cast<int32_t>(experts.size()));
    num_active.push_back(active_count);
  }
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_MOE_ROUTING_H_
