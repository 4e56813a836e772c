// What the engine reports about each step, for metrics and routing dumps. The engine knows
// nothing of Prometheus; implementations live with their users. Called on the engine's
// calling thread (the serving loop) during Forward; must be cheap.
#ifndef MOESERVE_ENGINE_ENGINE_OBSERVER_H_
#define MOESERVE_ENGINE_ENGINE_OBSERVER_H_

#include "engine/moe/routing.h"

namespace moeserve {

enum class LayerOp { kAttention, kMoe, kFfn };  // kFfn: a dense layer's SwiGLU

inline const char* LayerOpName(LayerOp op) {
  switch (op) {
    case LayerOp::kAttention: return "attention";
    case LayerOp::kMoe: return "moe";
    case LayerOp::kFfn: return "ffn";
  }
  return "?";
}

class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  // Once per MoE layer and step: the routing of every token of the batch (active flags set).
  virtual void OnRouting(int layer, const Routing& routing) {}
  // Wall time of one layer's attention block or FFN/MoE block in this step.
  virtual void OnLayerTime(int layer, LayerOp op, double seconds) {}
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_ENGINE_OBSERVER_H_
