// The seam between the engine and where its forward pass runs. The engine owns the weights and
// validates every batch; a backend (engine/backend/cpu, engine/backend/cuda) turns a valid batch
// into logits, routing and statistics. Backends are peers: neither knows of the other.
//
// Thread-safety: not thread-safe; one caller (the engine).
#ifndef MOESERVE_ENGINE_FORWARD_BACKEND_H_
#define MOESERVE_ENGINE_FORWARD_BACKEND_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "engine/engine_observer.h"
#include "engine/forward_batch.h"
#include "engine/kv_cache.h"

namespace moeserve {

struct BackendOptions {
  KvCacheShape kv;
  bool dense_experts = false;  // debug: evaluate every expert (zero weight when not routed)
  int num_threads = 0;         // CPU: 0 = all hardware threads
  int device = 0;              // CUDA: device ordinal
};

class ForwardBackend {
 public:
  virtual ~ForwardBackend() = default;
  // `batch` is already validated by the engine; `observer` may be null.
  virtual absl::Status Forward(const ForwardBatch& batch, EngineObserver* observer, ForwardOutput* out) = 0;
  // The machine it runs on, e.g. the GPU's name and compute capability.
  virtual std::string device() const = 0;
  // The kernel set in use (CPU: the instruction-set family; CUDA: the GEMM library).
  virtual std::string kernels() const = 0;
  virtual int num_threads() const { return 1; }
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_FORWARD_BACKEND_H_
