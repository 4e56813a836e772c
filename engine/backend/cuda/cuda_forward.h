// The CUDA backend's forward pass, a peer of the CPU backend behind ForwardBackend. Pure C++
// header: no CUDA types leak out, so everything above it compiles the same with and without the
// toolkit. Without MOESERVE_CUDA, cuda_unavailable.cc defines these functions instead: the build
// is reported as absent and creation fails cleanly.
//
// One step = the CPU backend's math (spec deco.md §3, softmoe.md §7.2.3) on the device:
// embedding → per layer [norm, q/k/v (cuBLAS bf16), RoPE, paged-KV store + attention, o_proj]
// and [norm, dense SwiGLU/GELU or MoE] → final norm of the requested rows → lm_head → logits
// copied to the host. MoE layers compute the fp32 router logits on the device, route there
// (router_kernels.cu: every router family, with the per-token ExpertBudget) and group the entries
// by expert there (expert_grouping.cu), so a step synchronises once, when its logits, active
// counts and (for an observer) routing come back together. Layers the device router does not
// cover (more than kMaxDeviceExperts experts, or MOESERVE_CUDA_HOST_ROUTING=1) route on the host
// with the reference Router objects. Pure-decode steps replay a CUDA graph per batch shape
// (decode_graphs.h; MOESERVE_CUDA_GRAPHS=0 turns that off).
//
// Thread-safety: not thread-safe (one caller, like the engine).
#ifndef MOESERVE_ENGINE_BACKEND_CUDA_CUDA_FORWARD_H_
#define MOESERVE_ENGINE_BACKEND_CUDA_CUDA_FORWARD_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/forward_backend.h"
#include "engine/model_weights.h"

namespace moeserve {

// True when this binary was built with the CUDA backend.
bool CudaBackendBuilt();

struct CudaProbe {
  int device_count = 0;
  std::string error;  // why there is none, when device_count is 0
};
// Counts usable devices without creating a context on them.
CudaProbe ProbeCudaDevices();

// Fails with FailedPrecondition "no CUDA device: ..." when no device is usable. `weights`
// must outlive the backend; its KV cache (options.kv) is kept on the device in bf16.
absl::StatusOr<std::unique_ptr<ForwardBackend>> CreateCudaForward(const ModelWeights& weights,
                                                                  const BackendOptions& options);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_BACKEND_CUDA_CUDA_FORWARD_H_
