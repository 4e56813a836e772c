#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/matmul.h"
#include "engine/status_macros.h"

namespace moeserve {
namespace {

// y = x / sqrt(mean(x²) + eps) ⊙ w, statistics in double for stability.
void RmsNorm(const float* x, const float* w, int64_t n, float eps, float* y) {
  double sq = 0;
  for (int64_t i = 0; i < n; ++i) sq += double{x[i]} * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(sq / n + eps));
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv * w[i];
}

// y = (x − μ) / sqrt(mean((x − μ)²) + eps) ⊙ w + b (biased variance), statistics in double.
void LayerNorm(const float* x, const float* w, const float* b, int64_t n, float eps, float* y) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / n;
  double sq = 0;
  for (int64_t i = 0; i < n; ++i) sq += (x[i] - mean) * (x[i] - mean);
  const double inv = 1.0 / std::sqrt(sq / n + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>((x[i] - mean) * inv) * w[i] + b[i];
}

inline float Silu(float x) { return x / (1.0f + std::exp(-x)); }

// Exact erf GELU (not the tanh approximation).
inline float Gelu(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }

// rows[t, :] += bias for t < T (rows of `stride` floats); nothing when bias is empty.
void AddRowBias(float* rows, int64_t T, int64_t stride, const std::vector<float>& bias) {
  if (bias.empty()) return;
  const int64_t n = static_cast<int64_t>(bias.size());
  for (int64_t t = 0; t < T; ++t) {
    float* r = rows + t * stride;
    for (int64_t i = 0; i < n; ++i) r[i] += bias[i];
  }
}

template <typename T>
void Grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

bool CudaBackendBuilt() {
#ifdef MOESERVE_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  if (options.backend == Backend::kCuda && !CudaBackendBuilt()) {
    return absl::FailedPreconditionError(
        "model.backend: cuda is not available in this build (configure with -DMOESERVE_CUDA=ON and nvcc present)");
  }
  std::unique_ptr<Engine> e(new Engine());
  e->options_ = options;
  // The CUDA backend keeps bf16 weights on the device whatever the compute dtype: load bf16 (mmapped
  // when the checkpoint has it) so the host copy is no larger than needed.
  const DType load_dtype = options.backend == Backend::kCuda ? DType::kBF16 : options.compute_dtype;
  ASSIGN_OR_RETURN(e->weights_, LoadModelWeights(options.model_dir, LoadOptions{load_dtype}));
  const ModelConfig& c = e->weights_->config;
  e->pool_ = std::make_unique<ThreadPool>(options.num_threads);
  KvCacheShape kv;
  kv.num_layers = static_cast<int>(c.num_layers.value);
  kv.num_kv_heads = static_cast<int>(c.num_kv_groups.value);
  kv.head_dim = static_cast<int>(c.head_dim);
  kv.block_size = options.kv_block_size;
  kv.num_blocks = options.kv_num_blocks;
  kv.dtype = options.kv_dtype.value_or(DefaultKvDType(options.backend == Backend::kCuda, options.compute_dtype));
  if (kv.block_size < 1 || kv.num_blocks < 1) {
    return absl::InvalidArgumentError("KV cache needs block_size >= 1 and at least one block");
  }
  if (kv.dtype != DType::kF32 && kv.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("model.kv_dtype: ", ComputeDTypeName(kv.dtype),
                                                   " is not a KV cache type (f32 or bf16)"));
  }
  if (options.backend == Backend::kCuda && kv.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("model.kv_dtype: the cuda backend keeps its KV cache in bf16");
  }
  e->kv_shape_ = kv;
  if (options.backend == Backend::kCuda) {
#ifdef MOESERVE_HAVE_CUDA
    CudaForwardOptions cuda_options;
    cuda_options.kv = kv;
    cuda_options.dense_experts = options.dense_experts;
    ASSIGN_OR_RETURN(e->cuda_, CreateCudaForward(*e->weights_, cuda_options));
#endif
    return e;
  }
  e->cache_ = std::make_unique<KvCache>(kv);
  if (c.positions == PositionKind::kRope) {
    e->rope_ = std::make_unique<RopeTable>(c.max_position_embeddings, static_cast<int>(c.head_dim), c.rope_theta);
  }
  e->attention_ = std::make_unique<PagedAttention>(
      e->pool_.get(), AttentionShape{static_cast<int>(c.num_heads.value), kv.num_kv_heads, kv.head_dim});
  e->experts_ = std::make_unique<ExpertExecutor>(e->pool_.get());
  return e;
}

absl::Status Engine::Validate(const ForwardBatch& batch) const {
  const int bs = kv_shape_.block_size;
  for (size_t s = 0; s < batch.chunks.size(); ++s) {
    const SequenceChunk& chunk = batch.chunks[s];
    if (chunk.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("chunk ", s, ": no tokens"));
    if (const char* bad = chunk.budget.Invalid(); bad != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("chunk ", s, ": expert budget ", bad));
    }
    for (int32_t id : chunk.tokens) {
      if (id < 0 || id >= vocab_size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " out of range [0, ", vocab_size(), ")"));
      }
    }
    const int64_t end = int64_t{chunk.start_position} + static_cast<int64_t>(chunk.tokens.size());
    if (chunk.start_position < 0 || end > max_context()) {
      return absl::InvalidArgumentError(absl::StrCat("positions [", chunk.start_position, ", ", end,
                                                     ") exceed the model's max context ", max_context()));
    }
    if (static_cast<int64_t>(chunk.block_table.size()) * bs < end) {
      return absl::InvalidArgumentError(absl::StrCat("chunk ", s, ": block table of ", chunk.block_table.size(),
                                                     " blocks cannot hold ", end, " positions"));
    }
    for (int32_t block : chunk.block_table) {
      if (block < 0 || block >= kv_shape_.num_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("chunk ", s, ": KV block ", block, " out of range"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Engine::Forward(const ForwardBatch& batch, ForwardOutput* out) {
  RETURN_IF_ERROR(Validate(batch));
  if (cuda_ != nullptr) return cuda_->Forward(batch, observer_, out);
  const ModelWeights& w = *weights_;
  const int64_t H = w.config.hidden_size.value, V = w.vocab_size;
  int64_t T = 0;
  for (const SequenceChunk& c : batch.chunks) T += static_cast<int64_t>(c.tokens.size());

  placement_.clear();
  token_budget_.clear();
  Grow(x_, T * H);
  const bool learned_positions = !w.pos_embed.empty();
  if (learned_positions) Grow(normed_, H);
  for (const SequenceChunk& c : batch.chunks) {
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      const int64_t t = static_cast<int64_t>(placement_.size());
      const int32_t position = c.start_position + static_cast<int32_t>(i);
      placement_.push_back({position, c.block_table.data()});
      token_budget_.push_back(c.budget);
      float* x = &x_[t * H];
      ConvertToF32(w.embed.dtype, w.embed.RowPtr(c.tokens[i]), H, x);
      if (learned_positions) {  // x_p = embed_tokens[t_p] + embed_positions[p]
        ConvertToF32(w.pos_embed.dtype, w.pos_embed.RowPtr(position), H, normed_.data());
        for (int64_t j = 0; j < H; ++j) x[j] += normed_[j];
      }
    }
  }
  out->active_counts.assign(w.layers.size() * T, 0);
  out->weight_bytes_read = T * H * DTypeSize(w.embed.dtype) * (learned_positions ? 2 : 1);  // embedding rows
  out_ = out;
  for (int layer = 0; layer < static_cast<int>(w.layers.size()); ++layer) RunLayer(layer, T);

  // Logits only for the rows the chunks ask for.
  out->vocab_size = V;
  out->chunk_logits_begin.assign(1, 0);
  std::vector<int64_t> rows;
  int64_t t0 = 0;
  for (const SequenceChunk& c : batch.chunks) {
    const int64_t n = static_cast<int64_t>(c.tokens.size());
    if (c.logits == LogitsMode::kAll) {
      for (int64_t i = 0; i < n; ++i) rows.push_back(t0 + i);
    } else if (c.logits == LogitsMode::kLast) {
      rows.push_back(t0 + n - 1);
    }
    out->chunk_logits_begin.push_back(static_cast<int32_t>(rows.size()));
    t0 += n;
  }
  const int64_t R = static_cast<int64_t>(rows.size());
  Grow(normed_, R * H);
  for (int64_t r = 0; r < R; ++r) Norm(&x_[rows[r] * H], w.final_norm, w.final_norm_bias, &normed_[r * H]);
  out->logits.resize(R * V);
  const MatMulJob head{&w.head, normed_.data(), H, out->logits.data(), V};
  ParallelMatMul(*pool_, std::span<const MatMulJob>(&head, 1), R);
  if (R > 0) out->weight_bytes_read += w.head.Bytes();
  out_ = nullptr;
  return absl::OkStatus();
}

void Engine::RunLayer(int layer_index, int64_t T) {
  const ModelWeights& w = *weights_;
  const LayerWeights& L = w.layers[layer_index];
  const ModelConfig& c = w.config;
  const int64_t H = c.hidden_size.value;
  const int64_t q_dim = L.q.rows, kv_dim = L.k.rows;
  Grow(normed_, T * H);
  Grow(q_, T * q_dim);
  Grow(k_, T * kv_dim);
  Grow(v_, T * kv_dim);
  Grow(attn_, T * q_dim);

  // Attention block.
  auto start = std::chrono::steady_clock::now();
  for (int64_t t = 0; t < T; ++t) Norm(&x_[t * H], L.input_norm, L.input_norm_bias, &normed_[t * H]);
  const MatMulJob qkv[] = {{&L.q, normed_.data(), H, q_.data(), q_dim},
                           {&L.k, normed_.data(), H, k_.data(), kv_dim},
                           {&L.v, normed_.data(), H, v_.data(), kv_dim}};
  ParallelMatMul(*pool_, qkv, T);
  AddRowBias(q_.data(), T, q_dim, L.q_bias);
  AddRowBias(k_.data(), T, kv_dim, L.k_bias);
  AddRowBias(v_.data(), T, kv_dim, L.v_bias);
  if (rope_ != nullptr) {
    for (int64_t t = 0; t < T; ++t) {
      rope_->Apply(&q_[t * q_dim], static_cast<int>(c.num_heads.value), placement_[t].position);
      rope_->Apply(&k_[t * kv_dim], static_cast<int>(c.num_kv_groups.value), placement_[t].position);
    }
  }
  attention_->Store(*cache_, layer_index, placement_, k_.data(), v_.data());
  attention_->Attend(*cache_, layer_index, placement_, q_.data(), attn_.data());
  const MatMulJob o{&L.o, attn_.data(), q_dim, x_.data(), H, /*accumulate=*/true};
  ParallelMatMul(*pool_, std::span<const MatMulJob>(&o, 1), T);
  AddRowBias(x_.data(), T, H, L.o_bias);
  out_->weight_bytes_read += L.q.Bytes() + L.k.Bytes() + L.v.Bytes() + L.o.Bytes();

  if (observer_ != nullptr) {
    const auto now = std::chrono::steady_clock::now();
    observer_->OnLayerTime(layer_index, LayerOp::kAttention, std::chrono::duration<double>(now - start).count());
    start = now;
  }

  // FFN block: residual added in place.
  for (int64_t t = 0; t < T; ++t) Norm(&x_[t * H], L.post_attention_norm, L.post_attention_norm_bias, &normed_[t * H]);
  if (L.is_moe) {
    RunMoe(layer_index, T);
  } else {
    Ffn(L.dense, T, x_.data());
  }
  if (observer_ != nullptr) {
    observer_->OnLayerTime(layer_index, L.is_moe ? LayerOp::kMoe : LayerOp::kFfn,
                           std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
}

void Engine::Norm(const float* x, const std::vector<float>& weight, const std::vector<float>& bias, float* y) const {
  const ModelConfig& c = weights_->config;
  if (c.norm == NormKind::kLayer) {
    LayerNorm(x, weight.data(), bias.data(), c.hidden_size.value, c.norm_epsilon, y);
  } else {
    RmsNorm(x, weight.data(), c.hidden_size.value, c.norm_epsilon, y);
  }
}

void Engine::Ffn(const FfnWeights& w, int64_t T, float* y) {
  ffn_jobs_.clear();
  AppendFfnInputJobs(w, T, ffn_jobs_);
  ParallelMatMul(*pool_, ffn_jobs_, T);
  FinishFfn(w, T, y);
}

void Engine::AppendFfnInputJobs(const FfnWeights& w, int64_t T, std::vector<MatMulJob>& jobs) {
  const int64_t H = weights_->config.hidden_size.value, F = w.up.rows;
  Grow(ffn_gate_, T * F);
  Grow(ffn_up_, T * F);
  if (w.gated()) {  // SwiGLU: gate·m and up·m
    jobs.push_back({&w.gate, normed_.data(), H, ffn_gate_.data(), F});
    jobs.push_back({&w.up, normed_.data(), H, ffn_up_.data(), F});
  } else {  // GELU: up·m, kept in ffn_gate_
    jobs.push_back({&w.up, normed_.data(), H, ffn_gate_.data(), F});
  }
}

void Engine::FinishFfn(const FfnWeights& w, int64_t T, float* y) {
  const int64_t H = weights_->config.hidden_size.value, F = w.up.rows;
  if (w.gated()) {  // SwiGLU: silu(gate·m + b_g) ⊙ (up·m + b_u)
    AddRowBias(ffn_gate_.data(), T, F, w.gate_bias);
    AddRowBias(ffn_up_.data(), T, F, w.up_bias);
    for (int64_t i = 0; i < T * F; ++i) ffn_gate_[i] = Silu(ffn_gate_[i]) * ffn_up_[i];
  } else {  // exact GELU: gelu(up·m + b_u)
    AddRowBias(ffn_gate_.data(), T, F, w.up_bias);
    for (int64_t i = 0; i < T * F; ++i) ffn_gate_[i] = Gelu(ffn_gate_[i]);
  }
  const MatMulJob down{&w.down, ffn_gate_.data(), F, y, H, /*accumulate=*/true};
  ParallelMatMul(*pool_, std::span<const MatMulJob>(&down, 1), T);
  AddRowBias(y, T, H, w.down_bias);
  out_->weight_bytes_read += w.gate.Bytes() + w.up.Bytes() + w.down.Bytes();
}

void Engine::RunMoe(int layer_index, int64_t T) {
  const MoeLayerWeights& moe = weights_->layers[layer_index].moe;
  const int64_t H = weights_->config.hidden_size.value, E = moe.experts.num_experts;
  // Router logits in fp32 (the router weight is always kept in fp32), in one parallel region
  // with the shared expert's input projections, which read the same normed input (the shared
  // expert's output is still added after the routed experts', as before).
  Grow(router_logits_, T * E);
  ffn_jobs_.assign(1, MatMulJob{&moe.router_weight, normed_.data(), H, router_logits_.data(), E});
  if (moe.shared) AppendFfnInputJobs(*moe.shared, T, ffn_jobs_);
  ParallelMatMul(*pool_, ffn_jobs_, T);
  routing_.Clear();
  // Worst case: every expert for every token (ties in LapSum, DECO's `normal` norm).
  routing_.experts.reserve(T * E);
  routing_.weights.reserve(T * E);
  routing_.active.reserve(T * E);
  for (int64_t t = 0; t < T; ++t) {
    moe.router->RouteToken(&router_logits_[t * E], router_scratch_, routing_, token_budget_[t]);
  }
  for (int64_t t = 0; t < T; ++t) out_->active_counts[layer_index * T + t] = routing_.num_active[t];
  if (observer_ != nullptr) observer_->OnRouting(layer_index, routing_);

  const Routing* evaluated = &routing_;
  if (options_.dense_experts) {
    ExpandToAllExperts(routing_, static_cast<int>(E), dense_routing_);
    evaluated = &dense_routing_;
  }
  experts_->Run(moe.experts, normed_.data(), T, *evaluated, x_.data());
  const ExpertBank& bank = moe.experts;
  const int64_t per_expert = (bank.gated() ? 3 : 2) * bank.width * H * DTypeSize(bank.up.dtype);
  out_->weight_bytes_read += moe.router_weight.Bytes() + experts_->last_union_size() * per_expert;
  if (moe.shared) FinishFfn(*moe.shared, T, x_.data());
}

}  // namespace moeserve
