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

inline float Silu(float x) { return x / (1.0f + std::exp(-x)); }

template <typename T>
void Grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  std::unique_ptr<Engine> e(new Engine());
  e->options_ = options;
  ASSIGN_OR_RETURN(e->weights_, LoadModelWeights(options.model_dir, LoadOptions{options.compute_dtype}));
  const ModelConfig& c = e->weights_->config;
  e->pool_ = std::make_unique<ThreadPool>(options.num_threads);
  KvCacheShape kv;
  kv.num_layers = static_cast<int>(c.num_layers.value);
  kv.num_kv_heads = static_cast<int>(c.num_kv_groups.value);
  kv.head_dim = static_cast<int>(c.head_dim);
  kv.block_size = options.kv_block_size;
  kv.num_blocks = options.kv_num_blocks;
  if (kv.block_size < 1 || kv.num_blocks < 1) {
    return absl::InvalidArgumentError("KV cache needs block_size >= 1 and at least one block");
  }
  e->cache_ = std::make_unique<KvCache>(kv);
  e->rope_ = std::make_unique<RopeTable>(c.max_position_embeddings, static_cast<int>(c.head_dim), c.rope_theta);
  e->attention_ = std::make_unique<PagedAttention>(
      e->pool_.get(), AttentionShape{static_cast<int>(c.num_heads.value), kv.num_kv_heads, kv.head_dim});
  e->experts_ = std::make_unique<ExpertExecutor>(e->pool_.get());
  return e;
}

absl::Status Engine::Validate(const ForwardBatch& batch) const {
  const int bs = cache_->shape().block_size;
  for (size_t s = 0; s < batch.chunks.size(); ++s) {
    const SequenceChunk& chunk = batch.chunks[s];
    if (chunk.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("chunk ", s, ": no tokens"));
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
      if (block < 0 || block >= cache_->shape().num_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("chunk ", s, ": KV block ", block, " out of range"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Engine::Forward(const ForwardBatch& batch, ForwardOutput* out) {
  RETURN_IF_ERROR(Validate(batch));
  const ModelWeights& w = *weights_;
  const int64_t H = w.config.hidden_size.value, V = w.vocab_size;
  int64_t T = 0;
  for (const SequenceChunk& c : batch.chunks) T += static_cast<int64_t>(c.tokens.size());

  placement_.clear();
  Grow(x_, T * H);
  for (const SequenceChunk& c : batch.chunks) {
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      const int64_t t = static_cast<int64_t>(placement_.size());
      placement_.push_back({c.start_position + static_cast<int32_t>(i), c.block_table.data()});
      ConvertToF32(w.embed.dtype, w.embed.RowPtr(c.tokens[i]), H, &x_[t * H]);
    }
  }
  out->active_counts.assign(w.layers.size() * T, 0);
  out->weight_bytes_read = T * H * DTypeSize(w.embed.dtype);  // embedding rows
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
  for (int64_t r = 0; r < R; ++r) {
    RmsNorm(&x_[rows[r] * H], w.final_norm.data(), H, w.config.norm_epsilon, &normed_[r * H]);
  }
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
  for (int64_t t = 0; t < T; ++t) RmsNorm(&x_[t * H], L.input_norm.data(), H, c.norm_epsilon, &normed_[t * H]);
  const MatMulJob qkv[] = {{&L.q, normed_.data(), H, q_.data(), q_dim},
                           {&L.k, normed_.data(), H, k_.data(), kv_dim},
                           {&L.v, normed_.data(), H, v_.data(), kv_dim}};
  ParallelMatMul(*pool_, qkv, T);
  for (int64_t t = 0; t < T; ++t) {
    rope_->Apply(&q_[t * q_dim], static_cast<int>(c.num_heads.value), placement_[t].position);
    rope_->Apply(&k_[t * kv_dim], static_cast<int>(c.num_kv_groups.value), placement_[t].position);
  }
  attention_->Store(*cache_, layer_index, placement_, k_.data(), v_.data());
  attention_->Attend(*cache_, layer_index, placement_, q_.data(), attn_.data());
  const MatMulJob o{&L.o, attn_.data(), q_dim, x_.data(), H, /*accumulate=*/true};
  ParallelMatMul(*pool_, std::span<const MatMulJob>(&o, 1), T);
  out_->weight_bytes_read += L.q.Bytes() + L.k.Bytes() + L.v.Bytes() + L.o.Bytes();

  if (observer_ != nullptr) {
    const auto now = std::chrono::steady_clock::now();
    observer_->OnLayerTime(layer_index, LayerOp::kAttention, std::chrono::duration<double>(now - start).count());
    start = now;
  }

  // FFN block: residual added in place.
  for (int64_t t = 0; t < T; ++t) {
    RmsNorm(&x_[t * H], L.post_attention_norm.data(), H, c.norm_epsilon, &normed_[t * H]);
  }
  if (L.is_moe) {
    RunMoe(layer_index, T);
  } else {
    SwiGlu(L.dense, T, x_.data());
  }
  if (observer_ != nullptr) {
    observer_->OnLayerTime(layer_index, L.is_moe ? LayerOp::kMoe : LayerOp::kFfn,
                           std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
}

void Engine::SwiGlu(const SwiGluWeights& w, int64_t T, float* y) {
  const int64_t H = weights_->config.hidden_size.value, F = w.gate.rows;
  Grow(ffn_gate_, T * F);
  Grow(ffn_up_, T * F);
  const MatMulJob gate_up[] = {{&w.gate, normed_.data(), H, ffn_gate_.data(), F},
                               {&w.up, normed_.data(), H, ffn_up_.data(), F}};
  ParallelMatMul(*pool_, gate_up, T);
  for (int64_t i = 0; i < T * F; ++i) ffn_gate_[i] = Silu(ffn_gate_[i]) * ffn_up_[i];
  const MatMulJob down{&w.down, ffn_gate_.data(), F, y, H, /*accumulate=*/true};
  ParallelMatMul(*pool_, std::span<const MatMulJob>(&down, 1), T);
  out_->weight_bytes_read += w.gate.Bytes() + w.up.Bytes() + w.down.Bytes();
}

void Engine::RunMoe(int layer_index, int64_t T) {
  const MoeLayerWeights& moe = weights_->layers[layer_index].moe;
  const int64_t H = weights_->config.hidden_size.value, E = moe.experts.num_experts;
  // Router logits in fp32 (the router weight is always kept in fp32).
  Grow(router_logits_, T * E);
  const MatMulJob router{&moe.router_weight, normed_.data(), H, router_logits_.data(), E};
  ParallelMatMul(*pool_, std::span<const MatMulJob>(&router, 1), T);
  routing_.Clear();
  for (int64_t t = 0; t < T; ++t) moe.router->RouteToken(&router_logits_[t * E], router_scratch_, routing_);
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
  if (moe.shared) SwiGlu(*moe.shared, T, x_.data());
}

}  // namespace moeserve
