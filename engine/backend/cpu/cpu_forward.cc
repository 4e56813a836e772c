#include "engine/backend/cpu/cpu_forward.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "engine/attention.h"
#include "engine/backend/cpu/panel_weights.h"
#include "engine/kernels/cpu/f64_sums.h"
#include "engine/kernels/cpu/matmul.h"
#include "engine/kernels/cpu/row_ranges.h"
#include "engine/kernels/cpu/thread_pool.h"
#include "engine/logits_rows.h"
#include "engine/moe/expert_executor.h"
#include "engine/moe/route_batch.h"

namespace moeserve {
namespace {

// y = x / sqrt(mean(x²) + eps) ⊙ w, statistics in double for stability.
void RmsNorm(const float* x, const float* w, int64_t n, float eps, float* y) {
  const double sq = SumSquaresF64(x, n);
  const float inv = static_cast<float>(1.0 / std::sqrt(sq / n + eps));
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv * w[i];
}

// y = (x − μ) / sqrt(mean((x − μ)²) + eps) ⊙ w + b (biased variance), statistics in double.
void LayerNorm(const float* x, const float* w, const float* b, int64_t n, float eps, float* y) {
  const double mean = SumF64(x, n) / n;
  const double sq = SumSquaredDeviationsF64(x, n, mean);
  const double inv = 1.0 / std::sqrt(sq / n + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>((x[i] - mean) * inv) * w[i] + b[i];
}

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

class CpuForward final : public ForwardBackend {
 public:
  CpuForward(const ModelWeights& weights, const BackendOptions& options);

  absl::Status Forward(const ForwardBatch& batch, EngineObserver* observer, ForwardOutput* out) override;
  std::string device() const override { return "host"; }
  std::string kernels() const override { return MatMulKernelName(); }
  int num_threads() const override { return pool_->num_threads(); }

 private:
  void RunLayer(int layer_index, int64_t T);
  void RunMoe(int layer_index, int64_t T);
  void Ffn(const FfnWeights& w, int64_t T, float* y);
  // The parts of Ffn, so that a MoE layer can run its shared expert's input projections in the
  // router's parallel region and its down projection in the routed experts' down region: the
  // gate/up jobs (into ffn_gate_/ffn_up_, sized here); biases and activation, returning the
  // down projection's job (accumulating into y; its bias not added); FinishFfn runs both last.
  void AppendFfnInputJobs(const FfnWeights& w, int64_t T, std::vector<MatMulJob>& jobs);
  MatMulJob ActivateFfn(const FfnWeights& w, int64_t T, float* y);
  void FinishFfn(const FfnWeights& w, int64_t T, float* y);
  // The model's norm (RMSNorm, or LayerNorm with `bias`) of one token's H values.
  void Norm(const float* x, const std::vector<float>& weight, const std::vector<float>& bias, float* y) const;
  // normed_ rows t < T = Norm of x_ rows t, split across the pool for prompts and large batches.
  void NormRows(const std::vector<float>& weight, const std::vector<float>& bias, int64_t T);

  const ModelWeights& weights_;
  BackendOptions options_;
  std::unique_ptr<ThreadPool> pool_;
  KvCache cache_;
  std::unique_ptr<RopeTable> rope_;  // null with learned absolute positions
  std::unique_ptr<PagedAttention> attention_;
  std::unique_ptr<ExpertExecutor> experts_;
  EngineObserver* observer_ = nullptr;  // while Forward runs

  // Workspaces [T, ...], grown on demand.
  std::vector<TokenPlacement> placement_;
  std::vector<ExpertBudget> token_budget_;  // [T], from each token's chunk
  std::vector<float> x_, normed_, q_, k_, v_, attn_, ffn_gate_, ffn_up_, router_logits_;
  std::vector<MatMulJob> ffn_jobs_;  // reused: the jobs of one parallel matmul region
  ForwardOutput* out_ = nullptr;  // the step's output, while Forward runs
  BatchRouter router_;
};

CpuForward::CpuForward(const ModelWeights& weights, const BackendOptions& options)
    : weights_(weights),
      options_(options),
      pool_(std::make_unique<ThreadPool>(options.num_threads)),
      cache_(options.kv) {
  const ModelConfig& c = weights.config;
  if (c.positions == PositionKind::kRope) {
    rope_ = std::make_unique<RopeTable>(c.max_position_embeddings, static_cast<int>(c.head_dim), c.rope_theta);
  }
  attention_ = std::make_unique<PagedAttention>(
      pool_.get(), AttentionShape{static_cast<int>(c.num_heads.value), options.kv.num_kv_heads, options.kv.head_dim});
  experts_ = std::make_unique<ExpertExecutor>(pool_.get());
}

}  // namespace

absl::Status CpuForward::Forward(const ForwardBatch& batch, EngineObserver* observer, ForwardOutput* out) {
  const ModelWeights& w = weights_;
  const ThreadPool::Stats before = pool_->stats();
  observer_ = observer;
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
  const std::vector<int32_t> rows = SelectLogitsRows(batch, V, out);
  const int64_t R = static_cast<int64_t>(rows.size());
  Grow(normed_, R * H);
  for (int64_t r = 0; r < R; ++r) Norm(&x_[rows[r] * H], w.final_norm, w.final_norm_bias, &normed_[r * H]);
  const MatMulJob head{&w.head, normed_.data(), H, out->logits.data(), V};
  ParallelMatMul(*pool_, std::span<const MatMulJob>(&head, 1), R);
  if (R > 0) out->weight_bytes_read += w.head.Bytes();
  const ThreadPool::Stats after = pool_->stats();
  out->parallel_regions = after.regions - before.regions;
  out->join_wait_ns = after.join_wait_ns - before.join_wait_ns;
  out->worker_spin_ns = after.worker_spin_ns - before.worker_spin_ns;
  out_ = nullptr;
  observer_ = nullptr;
  return absl::OkStatus();
}

void CpuForward::RunLayer(int layer_index, int64_t T) {
  const ModelWeights& w = weights_;
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
  NormRows(L.input_norm, L.input_norm_bias, T);
  const MatMulJob qkv[] = {{&L.q, normed_.data(), H, q_.data(), q_dim},
                           {&L.k, normed_.data(), H, k_.data(), kv_dim},
                           {&L.v, normed_.data(), H, v_.data(), kv_dim}};
  ParallelMatMul(*pool_, qkv, T);
  // Biases, rotation and the cache write, token by token.
  ForRowRanges(pool_.get(), T, q_dim + 2 * kv_dim, [&](int64_t t0, int64_t t1) {
    AddRowBias(&q_[t0 * q_dim], t1 - t0, q_dim, L.q_bias);
    AddRowBias(&k_[t0 * kv_dim], t1 - t0, kv_dim, L.k_bias);
    AddRowBias(&v_[t0 * kv_dim], t1 - t0, kv_dim, L.v_bias);
    for (int64_t t = t0; rope_ != nullptr && t < t1; ++t) {
      rope_->Apply(&q_[t * q_dim], static_cast<int>(c.num_heads.value), placement_[t].position);
      rope_->Apply(&k_[t * kv_dim], static_cast<int>(c.num_kv_groups.value), placement_[t].position);
    }
    attention_->Store(cache_, layer_index, placement_, k_.data(), v_.data(), t0, t1);
  });
  attention_->Attend(cache_, layer_index, placement_, q_.data(), attn_.data());
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
  NormRows(L.post_attention_norm, L.post_attention_norm_bias, T);
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

void CpuForward::Norm(const float* x, const std::vector<float>& weight, const std::vector<float>& bias,
                      float* y) const {
  const ModelConfig& c = weights_.config;
  if (c.norm == NormKind::kLayer) {
    LayerNorm(x, weight.data(), bias.data(), c.hidden_size.value, c.norm_epsilon, y);
  } else {
    RmsNorm(x, weight.data(), c.hidden_size.value, c.norm_epsilon, y);
  }
}

void CpuForward::NormRows(const std::vector<float>& weight, const std::vector<float>& bias, int64_t T) {
  const int64_t H = weights_.config.hidden_size.value;
  ForRowRanges(pool_.get(), T, H, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) Norm(&x_[t * H], weight, bias, &normed_[t * H]);
  });
}

void CpuForward::Ffn(const FfnWeights& w, int64_t T, float* y) {
  ffn_jobs_.clear();
  AppendFfnInputJobs(w, T, ffn_jobs_);
  ParallelMatMul(*pool_, ffn_jobs_, T);
  FinishFfn(w, T, y);
}

void CpuForward::AppendFfnInputJobs(const FfnWeights& w, int64_t T, std::vector<MatMulJob>& jobs) {
  const int64_t H = weights_.config.hidden_size.value, F = w.up.rows;
  Grow(ffn_gate_, T * F);
  Grow(ffn_up_, T * F);
  if (w.gated()) {  // SwiGLU: gate·m and up·m
    jobs.push_back({&w.gate, normed_.data(), H, ffn_gate_.data(), F});
    jobs.push_back({&w.up, normed_.data(), H, ffn_up_.data(), F});
  } else {  // GELU: up·m, kept in ffn_gate_
    jobs.push_back({&w.up, normed_.data(), H, ffn_gate_.data(), F});
  }
}

void CpuForward::FinishFfn(const FfnWeights& w, int64_t T, float* y) {
  const MatMulJob down = ActivateFfn(w, T, y);
  ParallelMatMul(*pool_, std::span<const MatMulJob>(&down, 1), T);
  AddRowBias(y, T, weights_.config.hidden_size.value, w.down_bias);
}

MatMulJob CpuForward::ActivateFfn(const FfnWeights& w, int64_t T, float* y) {
  const int64_t H = weights_.config.hidden_size.value, F = w.up.rows;
  ForRowRanges(pool_.get(), T, F, [&](int64_t t0, int64_t t1) {
    float* gate = &ffn_gate_[t0 * F];
    const int64_t n = (t1 - t0) * F;
    if (w.gated()) {  // SwiGLU: silu(gate·m + b_g) ⊙ (up·m + b_u)
      float* up = &ffn_up_[t0 * F];
      AddRowBias(gate, t1 - t0, F, w.gate_bias);
      AddRowBias(up, t1 - t0, F, w.up_bias);
      ActiveKernels().silu(gate, n);
      for (int64_t i = 0; i < n; ++i) gate[i] *= up[i];
    } else {  // exact GELU: gelu(up·m + b_u)
      AddRowBias(gate, t1 - t0, F, w.up_bias);
      ActiveKernels().gelu(gate, n);
    }
  });
  out_->weight_bytes_read += w.gate.Bytes() + w.up.Bytes() + w.down.Bytes();
  return MatMulJob{&w.down, ffn_gate_.data(), F, y, H, /*accumulate=*/true};
}

void CpuForward::RunMoe(int layer_index, int64_t T) {
  const MoeLayerWeights& moe = weights_.layers[layer_index].moe;
  const int64_t H = weights_.config.hidden_size.value, E = moe.experts.num_experts;
  // Router logits in fp32 (the router weight is always kept in fp32), in one parallel region
  // with the shared expert's input projections, which read the same normed input (the shared
  // expert's output is still added after the routed experts', as before).
  Grow(router_logits_, T * E);
  ffn_jobs_.assign(1, MatMulJob{&moe.router_weight, normed_.data(), H, router_logits_.data(), E});
  if (moe.shared) AppendFfnInputJobs(*moe.shared, T, ffn_jobs_);
  ParallelMatMul(*pool_, ffn_jobs_, T);
  const Routing& evaluated =
      router_.Route(*moe.router, router_logits_.data(), static_cast<int>(E), token_budget_, layer_index,
                    options_.dense_experts, observer_, out_);
  // The shared expert's down projection runs in the routed experts' down region, on each
  // thread's rows after their routed sums (the order of the additions as before).
  MatMulJob shared_down;
  if (moe.shared) shared_down = ActivateFfn(*moe.shared, T, x_.data());
  experts_->Run(moe.experts, normed_.data(), T, evaluated, x_.data(), moe.shared ? &shared_down : nullptr);
  if (moe.shared) AddRowBias(x_.data(), T, H, moe.shared->down_bias);
  const ExpertBank& bank = moe.experts;
  const int64_t per_expert = (bank.gated() ? 3 : 2) * bank.width * H * DTypeSize(bank.up.dtype);
  out_->weight_bytes_read += moe.router_weight.Bytes() + experts_->last_union_size() * per_expert;
}

std::unique_ptr<ForwardBackend> CreateCpuForward(ModelWeights& weights, const BackendOptions& options) {
  PackWeightsInPanels(weights);
  return std::make_unique<CpuForward>(weights, options);
}

}  // namespace moeserve
