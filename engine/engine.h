// The CPU engine: one batched forward pass per call over a paged KV cache (spec deco.md §3,
// softmoe.md §7.2.3).
// Owns the model weights, the thread pool and every workspace, so a step allocates nothing
// once the workspaces have grown to the largest batch seen.
//
// Thread-safety: not thread-safe; the serving loop (or the CLI) is its only caller.
#ifndef MOESERVE_ENGINE_ENGINE_H_
#define MOESERVE_ENGINE_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/attention.h"
#include "engine/backend/cpu/matmul.h"
#include "engine/backend/cuda/cuda_forward.h"
#include "engine/engine_observer.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/forward_batch.h"
#include "engine/kv_cache.h"
#include "engine/model_weights.h"
#include "engine/moe/expert_executor.h"

namespace moeserve {

// Where the forward pass runs. kCuda needs a build with MOESERVE_CUDA and a GPU
// (engine/backend/cuda/cuda_forward.h, docs/CUDA.md); the CPU backend is the reference.
enum class Backend { kCpu, kCuda };
inline const char* BackendName(Backend b) { return b == Backend::kCuda ? "cuda" : "cpu"; }

// True when this binary was built with the CUDA backend.
bool CudaBackendBuilt();

struct EngineOptions {
  std::string model_dir;
  Backend backend = Backend::kCpu;
  DType compute_dtype = DType::kF32;
  int num_threads = 0;         // 0 = all hardware threads
  int kv_block_size = 16;
  int64_t kv_num_blocks = 0;   // KV cache capacity in blocks
  std::optional<DType> kv_dtype;  // kF32 or kBF16; unset: DefaultKvDType (kv_cache.h)
  bool dense_experts = false;  // debug: evaluate every expert (zero weight when not routed)
};


class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);

  // Runs one step. Validates token ids, positions and block tables first; on error nothing is
  // written to the cache.
  absl::Status Forward(const ForwardBatch& batch, ForwardOutput* out);

  // Not owned; nullptr to detach. Set only between steps.
  void set_observer(EngineObserver* observer) { observer_ = observer; }

  const ModelWeights& weights() const { return *weights_; }
  const ModelConfig& config() const { return weights_->config; }
  int64_t vocab_size() const { return weights_->vocab_size; }
  int64_t max_context() const { return weights_->config.max_position_embeddings; }
  const KvCacheShape& kv_shape() const { return kv_shape_; }
  Backend backend() const { return options_.backend; }
  int num_threads() const { return pool_->num_threads(); }

 private:
  Engine() = default;
  absl::Status Validate(const ForwardBatch& batch) const;
  void RunLayer(int layer_index, int64_t T);
  void RunMoe(int layer_index, int64_t T);
  void Ffn(const FfnWeights& w, int64_t T, float* y);
  // The two halves of Ffn, so that a MoE layer can run its shared expert's input projections
  // in the router's parallel region: the gate/up jobs (into ffn_gate_/ffn_up_, sized here),
  // then biases, activation and the down projection added into y.
  void AppendFfnInputJobs(const FfnWeights& w, int64_t T, std::vector<MatMulJob>& jobs);
  void FinishFfn(const FfnWeights& w, int64_t T, float* y);
  // The model's norm (RMSNorm, or LayerNorm with `bias`) of one token's H values.
  void Norm(const float* x, const std::vector<float>& weight, const std::vector<float>& bias, float* y) const;

  EngineOptions options_;
  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<ThreadPool> pool_;
  KvCacheShape kv_shape_;
  std::unique_ptr<KvCache> cache_;     // CPU backend only
  std::unique_ptr<CudaForward> cuda_;  // CUDA backend only
  std::unique_ptr<RopeTable> rope_;  // null with learned absolute positions
  std::unique_ptr<PagedAttention> attention_;
  std::unique_ptr<ExpertExecutor> experts_;
  EngineObserver* observer_ = nullptr;

  // Workspaces [T, ...], grown on demand.
  std::vector<TokenPlacement> placement_;
  std::vector<ExpertBudget> token_budget_;  // [T], from each token's chunk
  std::vector<float> x_, normed_, q_, k_, v_, attn_, ffn_gate_, ffn_up_, router_logits_;
  std::vector<MatMulJob> ffn_jobs_;  // reused: the jobs of one parallel matmul region
  ForwardOutput* out_ = nullptr;  // the step's output, while Forward runs
  Routing routing_, dense_routing_;
  RouterScratch router_scratch_;
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_ENGINE_H_
