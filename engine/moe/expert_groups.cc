#include "engine/moe/expert_groups.h"

#include <cstddef>

namespace moeserve {

void ExpertGroups::Build(const Routing& routing, int num_experts) {
  offsets.assign(num_experts + 1, 0);
  for (int32_t e : routing.experts) ++offsets[e + 1];
  for (int e = 0; e < num_experts; ++e) offsets[e + 1] += offsets[e];
  const size_t entries = routing.experts.size();
  slot_token.resize(entries);
  slot_weight.resize(entries);
  slot_of_entry.resize(entries);
  active.assign(offsets.begin(), offsets.end() - 1);  // the fill cursor first
  for (int64_t t = 0; t < routing.num_tokens(); ++t) {
    for (int32_t i = routing.offsets[t]; i < routing.offsets[t + 1]; ++i) {
      const int32_t slot = active[routing.experts[i]]++;
      slot_token[slot] = static_cast<int32_t>(t);
      slot_weight[slot] = routing.weights[i];
      slot_of_entry[i] = slot;
    }
  }
  active.clear();
  for (int e = 0; e < num_experts; ++e) {
    if (offsets[e + 1] > offsets[e]) active.push_back(e);
  }
}

}  // namespace moeserve
