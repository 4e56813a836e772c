// The CPU backend's weight layout: the matrices its matmuls read (attention projections, dense
// and shared-expert FFNs, the routed experts' up and gate rows, the LM head; the routed
// experts' down slices in int8) repacked once into panels (panel_layout.h) where the active
// kernel set has panel kernels for their dtype. Bf16 down slices stay row-major for the
// grouped kernel, routers stay fp32, the embedding stays row-major.
#ifndef MOESERVE_ENGINE_BACKEND_CPU_PANEL_WEIGHTS_H_
#define MOESERVE_ENGINE_BACKEND_CPU_PANEL_WEIGHTS_H_

#include "engine/model_weights.h"

namespace moeserve {

// Packs `weights` in place (the packed memory joins weights.panel_storage). Returns the number
// of matrices packed; 0 where the kernels have no panel form for the compute dtype.
int PackWeightsInPanels(ModelWeights& weights);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_BACKEND_CPU_PANEL_WEIGHTS_H_
