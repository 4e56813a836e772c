// A batch's (token, expert) entries grouped by expert: the counting sort both backends run
// before their expert kernels, so that each active expert's weights are read once for all the
// tokens that chose it. Tokens stay in ascending order within an expert's group.
#ifndef MOESERVE_ENGINE_MOE_EXPERT_GROUPS_H_
#define MOESERVE_ENGINE_MOE_EXPERT_GROUPS_H_

#include <cstdint>
#include <vector>

#include "engine/moe/routing.h"

namespace moeserve {

struct ExpertGroups {
  std::vector<int32_t> offsets;        // [E + 1]: expert e's slots are [offsets[e], offsets[e + 1])
  std::vector<int32_t> slot_token;     // [entries]: the token of each slot
  std::vector<float> slot_weight;      // [entries]: its combination weight
  std::vector<int32_t> slot_of_entry;  // [entries]: routing entry -> its slot
  std::vector<int32_t> active;         // experts with at least one slot, ascending (the union)

  // Regroups `routing` (over `num_experts` experts); reuses the vectors' capacity.
  void Build(const Routing& routing, int num_experts);
  int64_t num_entries() const { return static_cast<int64_t>(slot_token.size()); }
  int32_t size(int expert) const { return offsets[expert + 1] - offsets[expert]; }
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_MOE_EXPERT_GROUPS_H_
