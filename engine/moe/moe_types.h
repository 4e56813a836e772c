// Enumerations of the MoE layer's modes (spec deco.md §3.3, §4).
#ifndef MOESERVE_ENGINE_MOE_MOE_TYPES_H_
#define MOESERVE_ENGINE_MOE_MOE_TYPES_H_

namespace moeserve {

enum class RouterKind { kDecoRelu, kTopK, kReMoE, kTopP };
enum class RouterNormType { kSimple, kRms, kNormal, kNull };
enum class ExpertAct { kNormSilu, kNormSiluNoMean, kNormSiluNorms, kSilu };
enum class BiasApply { kBase, kRms };
enum class ScoreFunction { kSoftmax, kSigmoid };

inline const char* RouterKindName(RouterKind k) {
  switch (k) {
    case RouterKind::kDecoRelu: return "deco_relu";
    case RouterKind::kTopK: return "topk";
    case RouterKind::kReMoE: return "remoe";
    case RouterKind::kTopP: return "topp";
  }
  return "?";
}

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_MOE_MOE_TYPES_H_
