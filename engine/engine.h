// The engine: one batched forward pass per call over a paged KV cache (spec deco.md §3,
// softmoe.md §7.2.3), and the facts of what it serves (EngineInfo). An interface, so that the
// scheduler can be driven by a fake in tests; Engine::Create builds the real one, which owns the
// weights, validates every batch and hands it to one ForwardBackend (CPU or CUDA).
//
// Thread-safety: not thread-safe; the serving loop (or the CLI) is its only caller.
#ifndef MOESERVE_ENGINE_ENGINE_H_
#define MOESERVE_ENGINE_ENGINE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/dtype.h"
#include "engine/engine_info.h"
#include "engine/engine_observer.h"
#include "engine/forward_batch.h"

namespace moeserve {

// True when this binary has the CUDA backend (model.backend: cuda can work at all).
bool CudaBackendAvailable();

struct EngineOptions {
  std::string model_dir;
  BackendChoice backend = BackendChoice::kCpu;
  DType compute_dtype = DType::kF32;
  int num_threads = 0;         // 0 = all hardware threads
  int kv_block_size = 16;
  int64_t kv_num_blocks = 0;   // KV cache capacity in blocks; 0: from kv_memory_mb
  int64_t kv_memory_mb = 0;    // used when kv_num_blocks is 0
  std::optional<DType> kv_dtype;  // kF32 or kBF16; unset: DefaultKvDType (kv_cache.h)
  bool dense_experts = false;  // debug: evaluate every expert (zero weight when not routed)
  int cuda_device = 0;
};

class Engine {
 public:
  // Loads the model, picks the backend (logging why under BackendChoice::kAuto) and sizes the KV
  // cache. Every error names the option or file at fault.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);

  virtual ~Engine() = default;

  // Runs one step. Validates token ids, positions, budgets and block tables first; on error
  // nothing is written to the cache.
  virtual absl::Status Forward(const ForwardBatch& batch, ForwardOutput* out) = 0;

  virtual const EngineInfo& info() const = 0;

  // Not owned; nullptr to detach. Set only between steps.
  virtual void set_observer(EngineObserver* observer) = 0;
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_ENGINE_H_
