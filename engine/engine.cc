#include "engine/engine.h"

#include <algorithm>
#include <iostream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/backend/create_backend.h"
#include "engine/backend/cuda/cuda_forward.h"
#include "engine/model_weights.h"

namespace moeserve {
namespace {

std::string Architecture(const ModelConfig& c) {
  if (c.num_experts == 0) return "dense";
  if (c.use_blockffn) return c.router_norm == RouterNormType::kSimple ? "deco" : "blockffn";
  switch (c.router) {
    case RouterKind::kTopK: return "topk_moe";
    case RouterKind::kReMoE: return "remoe";
    case RouterKind::kTopP: return "topp_moe";
    case RouterKind::kLapSum: return "softmoe";
    default: return "moe";
  }
}

// The facts the server and tools read, from the weights and the backend in use.
EngineInfo DescribeModel(const ModelWeights& w) {
  const ModelConfig& c = w.config;
  EngineInfo info;
  info.architecture = Architecture(c);
  info.router = c.num_experts ? RouterKindName(c.router) : "none";
  info.num_layers = static_cast<int>(w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    if (w.layers[i].is_moe) info.moe_layers.push_back({static_cast<int>(i), w.layers[i].moe.experts.num_experts});
  }
  info.num_experts = static_cast<int>(c.num_experts);
  info.expert_width = static_cast<int>(c.expert_width);
  info.active_expert_budget = c.num_experts && c.router == RouterKind::kTopK ? static_cast<int>(c.topk) : 0;
  info.vocab_size = w.vocab_size;
  info.max_context = c.max_position_embeddings;
  info.total_parameters = w.TotalParameters();
  info.bos_token_id = c.bos_token_id;
  info.eos_token_ids = c.eos_token_ids;
  info.dtype = w.compute_dtype;
  info.warnings = c.warnings;
  return info;
}

// Owns the weights, validates every batch, and runs it on its one backend.
class ModelEngine final : public Engine {
 public:
  ModelEngine(std::unique_ptr<ModelWeights> weights, EngineInfo info)
      : weights_(std::move(weights)), info_(std::move(info)) {}

  absl::Status Init(Backend backend, const BackendOptions& options) {
    ASSIGN_OR_RETURN(backend_, CreateBackend(backend, *weights_, options));
    info_.device = backend_->device();
    info_.kernels = backend_->kernels();
    info_.num_threads = backend_->num_threads();
    return absl::OkStatus();
  }

  absl::Status Forward(const ForwardBatch& batch, ForwardOutput* out) override {
    RETURN_IF_ERROR(Validate(batch));
    return backend_->Forward(batch, observer_, out);
  }
  const EngineInfo& info() const override { return info_; }
  void set_observer(EngineObserver* observer) override { observer_ = observer; }

 private:
  absl::Status Validate(const ForwardBatch& batch) const;

  std::unique_ptr<ModelWeights> weights_;
  EngineInfo info_;
  std::unique_ptr<ForwardBackend> backend_;
  EngineObserver* observer_ = nullptr;
};

absl::Status ModelEngine::Validate(const ForwardBatch& batch) const {
  const int bs = info_.kv.block_size;
  for (size_t s = 0; s < batch.chunks.size(); ++s) {
    const SequenceChunk& chunk = batch.chunks[s];
    if (chunk.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("chunk ", s, ": no tokens"));
    if (const char* bad = chunk.budget.Invalid(); bad != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("chunk ", s, ": expert budget ", bad));
    }
    for (int32_t id : chunk.tokens) {
      if (id < 0 || id >= info_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " out of range [0, ", info_.vocab_size, ")"));
      }
    }
    const int64_t end = int64_t{chunk.start_position} + static_cast<int64_t>(chunk.tokens.size());
    if (chunk.start_position < 0 || end > info_.max_context) {
      return absl::InvalidArgumentError(absl::StrCat("positions [", chunk.start_position, ", ", end,
                                                     ") exceed the model's max context ", info_.max_context));
    }
    if (static_cast<int64_t>(chunk.block_table.size()) * bs < end) {
      return absl::InvalidArgumentError(absl::StrCat("chunk ", s, ": block table of ", chunk.block_table.size(),
                                                     " blocks cannot hold ", end, " positions"));
    }
    for (int32_t block : chunk.block_table) {
      if (block < 0 || block >= info_.kv.num_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("chunk ", s, ": KV block ", block, " out of range"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool CudaBackendAvailable() { return CudaBackendBuilt(); }

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  ASSIGN_OR_RETURN(const BackendDecision decision, DecideBackend(options.backend));
  if (options.backend == BackendChoice::kAuto) {
    std::cerr << "moeserve: backend " << BackendName(decision.backend) << " (" << decision.reason << ")\n";
  }
  const bool cuda = decision.backend == Backend::kCuda;
  // The CUDA backend keeps bf16 weights on the device whatever the compute dtype: load bf16 (mmapped
  // when the checkpoint has it) so the host copy is no larger than needed.
  const DType load_dtype = cuda ? DType::kBF16 : options.compute_dtype;
  ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> weights, LoadModelWeights(options.model_dir, LoadOptions{load_dtype}));
  EngineInfo info = DescribeModel(*weights);
  info.backend = decision.backend;
  info.backend_reason = decision.reason;

  const ModelConfig& c = weights->config;
  KvCacheShape& kv = info.kv;
  kv.num_layers = static_cast<int>(c.num_layers.value);
  kv.num_kv_heads = static_cast<int>(c.num_kv_groups.value);
  kv.head_dim = static_cast<int>(c.head_dim);
  kv.block_size = options.kv_block_size;
  kv.dtype = options.kv_dtype.value_or(DefaultKvDType(cuda, options.compute_dtype));
  if (kv.block_size < 1) return absl::InvalidArgumentError("scheduler.kv_block_size: must be >= 1");
  if (kv.dtype != DType::kF32 && kv.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("model.kv_dtype: ", ComputeDTypeName(kv.dtype),
                                                   " is not a KV cache type (f32 or bf16)"));
  }
  if (cuda && kv.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("model.kv_dtype: the cuda backend keeps its KV cache in bf16");
  }
  if (options.kv_num_blocks <= 0 && options.kv_memory_mb <= 0) {
    return absl::InvalidArgumentError("KV cache needs at least one block (kv_num_blocks or kv_memory_mb)");
  }
  // A memory budget holds as many blocks as its bytes allow for this model and element type.
  kv.num_blocks = options.kv_num_blocks > 0
                      ? options.kv_num_blocks
                      : std::max<int64_t>(1, options.kv_memory_mb * (int64_t{1} << 20) / kv.BytesPerBlock());

  BackendOptions backend_options;
  backend_options.kv = kv;
  backend_options.dense_experts = options.dense_experts;
  backend_options.num_threads = options.num_threads;
  backend_options.device = options.cuda_device;
  auto engine = std::make_unique<ModelEngine>(std::move(weights), std::move(info));
  RETURN_IF_ERROR(engine->Init(decision.backend, backend_options));
  return engine;
}

}  // namespace moeserve
