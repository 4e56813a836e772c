// The CPU backend: one batched forward pass over the paged KV cache in host memory (spec
// deco.md §3, softmoe.md §7.2.3), on the kernels of engine/kernels/cpu. The reference backend.
// Owns the thread pool, the cache and every workspace, so a step allocates nothing once the
// workspaces have grown to the largest batch seen.
#ifndef MOESERVE_ENGINE_BACKEND_CPU_CPU_FORWARD_H_
#define MOESERVE_ENGINE_BACKEND_CPU_CPU_FORWARD_H_

#include <memory>

#include "engine/forward_backend.h"
#include "engine/model_weights.h"

namespace moeserve {

// `weights` must outlive the backend, which repacks its matrices for the CPU kernels
// (panel_weights.h) and reads them from then on.
std::unique_ptr<ForwardBackend> CreateCpuForward(ModelWeights& weights, const BackendOptions& options);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_BACKEND_CPU_CPU_FORWARD_H_
