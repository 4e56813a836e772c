#include "engine/moe/router.h"

namespace moeserve {

std::unique_ptr<Router> MakeRouter(const RouterSpec& spec) {
  switch (spec.kind) {
    case RouterKind::kDecoRelu: return MakeDecoRouter(spec);
    case RouterKind::kTopK: return MakeTopKRouter(spec);
    case RouterKind::kReMoE: return MakeReMoERouter(spec);
    case RouterKind::kTopP: return MakeTopPRouter(spec);
    case RouterKind::kLapSum: return MakeLapSumRouter(spec);
  }
  return nullptr;
}

void ExpandToAllExperts(const Routing& in, int num_experts, Routing& out) {
  out.Clear();
  for (int64_t t = 0; t < in.num_tokens(); ++t) {
    int32_t entry = in.offsets[t];
    const int32_t end = in.offsets[t + 1];
    for (int e = 0; e < num_experts; ++e) {
      if (entry < end && in.experts[entry] == e) {
        out.Add(e, in.weights[entry], in.active[entry] != 0);
        ++entry;
      } else {
        out.Add(e, 0.0f, false);
      }
    }
    out.EndToken(in.num_active[t]);
  }
}

}  // namespace moeserve
