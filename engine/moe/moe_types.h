// Enumerations of the MoE layer's modes (spec deco.md §3.3, §4; softmoe.md §2-§4, §7.2).
#ifndef MOESERVE_ENGINE_MOE_MOE_TYPES_H_
#define MOESERVE_ENGINE_MOE_MOE_TYPES_H_

namespace moeserve {

// kLapSum: SoftMoE's LapSum truncated soft top-k (spec softmoe.md §2-§4).
enum class RouterKind { kDecoRelu, kTopK, kReMoE, kTopP, kLapSum };
enum class RouterNormType { kSimple, kRms, kNormal, kNull };
// kGelu: exact erf GELU, ½·u·(1 + erf(u/√2)) (SoftMoE `expert_activation: gelu`).
enum class ExpertAct { kNormSilu, kNormSiluNoMean, kNormSiluNorms, kSilu, kGelu };
enum class BiasApply { kBase, kRms };
enum class ScoreFunction { kSoftmax, kSigmoid };

inline const char* RouterKindName(RouterKind k) {
  switch (k) {
    case RouterKind::kDecoRelu: return "deco_relu";
    case RouterKind::kTopK: return "topk";
    case RouterKind::kReMoE: return "remoe";
    case RouterKind::kTopP: return "topp";
    case RouterKind::kLapSum: return "lapsum";
  }
  return "?";
}

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_MOE_MOE_TYPES_H_
