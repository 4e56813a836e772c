// The CUDA backend's forward pass behind the engine interface (engine/engine.h dispatches to
// it when EngineOptions::backend is kCuda). Pure C++ header: no CUDA types leak out, so the
// engine compiles the same with and without the toolkit.
//
// One step = the CPU engine's math (spec deco.md §3, softmoe.md §7.2.3) on the device:
// embedding → per layer [norm, q/k/v (cuBLAS bf16), RoPE, paged-KV store + attention, o_proj]
// and [norm, dense SwiGLU/GELU or MoE] → final norm of the requested rows → lm_head → logits
// copied to the host. MoE layers compute the fp32 router logits on the device, copy them to the
// host and route with the reference Router objects (so active sets match the CPU backend's
// exactly for equal logits, every router family and expert budget), then upload the compacted
// (token, expert) pairs grouped by expert and run the grouped expert kernels.
//
// Thread-safety: not thread-safe (one caller, like Engine).
#ifndef MOESERVE_ENGINE_BACKEND_CUDA_CUDA_FORWARD_H_
#define MOESERVE_ENGINE_BACKEND_CUDA_CUDA_FORWARD_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/engine_observer.h"
#include "engine/forward_batch.h"
#include "engine/kv_cache.h"
#include "engine/model_weights.h"

namespace moeserve {

struct CudaForwardOptions {
  KvCacheShape kv;  // blocks are held on the device in bf16
  bool dense_experts = false;
  int device = 0;
};

class CudaForward {
 public:
  virtual ~CudaForward() = default;
  // `batch` is already validated by the engine. `weights` (given at creation) must outlive this.
  virtual absl::Status Forward(const ForwardBatch& batch, EngineObserver* observer, ForwardOutput* out) = 0;
  virtual std::string device_name() const = 0;
  // Device bytes held: weights, KV cache and workspaces.
  virtual int64_t device_bytes() const = 0;
};

// Fails with FailedPrecondition "no CUDA device: ..." when no device is usable.
absl::StatusOr<std::unique_ptr<CudaForward>> CreateCudaForward(const ModelWeights& weights,
                                                               const CudaForwardOptions& options);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_BACKEND_CUDA_CUDA_FORWARD_H_
