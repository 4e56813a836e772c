#include "engine/backend/cuda/cuda_forward.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "engine/backend/cuda/cuda_status.h"
#include "engine/backend/cuda/device_buffer.h"
#include "engine/backend/cuda/device_model.h"
#include "engine/backend/cuda/gemm.h"
#include "engine/backend/cuda/kernels.h"
#include "common/status_macros.h"
#include "engine/logits_rows.h"
#include "engine/moe/expert_groups.h"
#include "engine/moe/route_batch.h"

namespace moeserve {
namespace {

using cuda::bf16;
using cuda::DeviceBuffer;
using cuda::PinnedBuffer;

class CudaForward final : public ForwardBackend {
 public:
  CudaForward(const ModelWeights& w, const BackendOptions& o) : w_(w), opt_(o) {}
  ~CudaForward() override {
    if (stream_ != nullptr) {
      cudaStreamSynchronize(stream_);
      gemm_.reset();
      cudaStreamDestroy(stream_);
    }
  }

  absl::Status Init();
  absl::Status Forward(const ForwardBatch& batch, EngineObserver* observer, ForwardOutput* out) override;
  std::string device() const override { return device_name_; }
  std::string kernels() const override { return "cuda: cuBLAS bf16 GEMMs, grouped expert kernels"; }
  // Device bytes held: weights, KV cache and workspaces.
  int64_t device_bytes() const;

 private:
  absl::Status Reserve(int64_t T, int64_t R, int64_t table_entries);
  absl::Status RunLayer(int layer, int64_t T);
  absl::Status RunMoe(int layer, int64_t T);
  absl::Status Ffn(const FfnWeights& host, const cuda::DeviceFfn& f, int64_t T);
  absl::Status Sync() { return cuda::CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }
  // Wall time since `start` (synchronising first) to the observer, then restarts the clock.
  absl::Status ReportTime(int layer, LayerOp op, std::chrono::steady_clock::time_point& start);

  const ModelWeights& w_;
  BackendOptions opt_;
  std::string device_name_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::Gemm> gemm_;
  std::unique_ptr<cuda::DeviceModel> dm_;
  DeviceBuffer<bf16> keys_, values_;
  int64_t layer_kv_elems_ = 0;
  // Widest projection of each kind, for sizing workspaces.
  int64_t max_q_ = 0, max_kv_ = 0, max_ffn_ = 0, max_experts_ = 0, max_width_ = 0;

  // The step's metadata: [tokens T][positions T][table_begin T][rows R][tables ...].
  PinnedBuffer<int32_t> meta_h_;
  DeviceBuffer<int32_t> meta_d_;
  const int32_t *tokens_d_ = nullptr, *positions_d_ = nullptr, *table_begin_d_ = nullptr, *rows_d_ = nullptr,
                *tables_d_ = nullptr;
  // Workspaces [T, ...], grown at most once per larger batch.
  DeviceBuffer<float> x_, normed32_, q_, k_, v_, ffn_a_, ffn_b_, logits_, router_logits_, mean_, hidden_;
  DeviceBuffer<bf16> normed16_, attn16_, act16_;
  PinnedBuffer<float> router_logits_h_;
  // MoE pairs of one layer: ints [tile_expert][tile_begin][tile_count][slot_token][token_begin]
  // [entry_expert][entry_slot], floats [slot_weight][entry_weight].
  PinnedBuffer<int32_t> moe_h_;
  DeviceBuffer<int32_t> moe_d_;
  PinnedBuffer<float> moe_wh_;
  DeviceBuffer<float> moe_wd_;
  size_t moe_ints_ = 0, moe_floats_ = 0;

  EngineObserver* observer_ = nullptr;
  ForwardOutput* out_ = nullptr;
  std::vector<ExpertBudget> budget_;
  BatchRouter router_;
  ExpertGroups groups_;
};

absl::Status CudaForward::Init() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device: model.backend cuda needs a GPU (",
                     e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount returned 0", ")"));
  }
  if (opt_.device < 0 || opt_.device >= count) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", opt_.device, " out of range [0, ", count, ")"));
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(opt_.device));
  cudaDeviceProp prop;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, opt_.device));
  device_name_ = absl::StrCat(prop.name, " (sm_", prop.major, prop.minor, ")");
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  ASSIGN_OR_RETURN(gemm_, cuda::Gemm::Create(stream_));
  ASSIGN_OR_RETURN(dm_, cuda::UploadModel(w_));

  const KvCacheShape& kv = opt_.kv;
  layer_kv_elems_ = kv.num_blocks * kv.block_size * kv.num_kv_heads * kv.head_dim;
  const size_t kv_elems = static_cast<size_t>(layer_kv_elems_) * kv.num_layers;
  RETURN_IF_ERROR(keys_.Reserve(kv_elems));
  RETURN_IF_ERROR(values_.Reserve(kv_elems));
  CUDA_RETURN_IF_ERROR(cudaMemset(keys_.get(), 0, kv_elems * sizeof(bf16)));
  CUDA_RETURN_IF_ERROR(cudaMemset(values_.get(), 0, kv_elems * sizeof(bf16)));

  for (const LayerWeights& L : w_.layers) {
    max_q_ = std::max(max_q_, L.q.rows);
    max_kv_ = std::max(max_kv_, L.k.rows);
    if (!L.is_moe) {
      max_ffn_ = std::max(max_ffn_, L.dense.up.rows);
      continue;
    }
    if (L.moe.shared) max_ffn_ = std::max(max_ffn_, L.moe.shared->up.rows);
    max_experts_ = std::max<int64_t>(max_experts_, L.moe.experts.num_experts);
    max_width_ = std::max(max_width_, L.moe.experts.width);
  }
  return absl::OkStatus();
}

int64_t CudaForward::device_bytes() const {
  int64_t b = dm_ ? dm_->bytes : 0;
  b += keys_.bytes() + values_.bytes() + meta_d_.bytes() + moe_d_.bytes() + moe_wd_.bytes();
  for (const DeviceBuffer<float>* f : {&x_, &normed32_, &q_, &k_, &v_, &ffn_a_, &ffn_b_, &logits_, &router_logits_,
                                       &mean_, &hidden_}) {
    b += f->bytes();
  }
  return b + normed16_.bytes() + attn16_.bytes() + act16_.bytes();
}

absl::Status CudaForward::Reserve(int64_t T, int64_t R, int64_t table_entries) {
  const int64_t H = w_.config.hidden_size.value, V = w_.vocab_size;
  RETURN_IF_ERROR(meta_h_.Reserve(3 * T + R + table_entries));
  RETURN_IF_ERROR(meta_d_.Reserve(3 * T + R + table_entries));
  RETURN_IF_ERROR(x_.Reserve(T * H));
  RETURN_IF_ERROR(normed32_.Reserve(T * H));
  RETURN_IF_ERROR(normed16_.Reserve(T * H));
  RETURN_IF_ERROR(q_.Reserve(T * max_q_));
  RETURN_IF_ERROR(attn16_.Reserve(T * max_q_));
  RETURN_IF_ERROR(k_.Reserve(T * max_kv_));
  RETURN_IF_ERROR(v_.Reserve(T * max_kv_));
  RETURN_IF_ERROR(ffn_a_.Reserve(std::max<int64_t>(T * max_ffn_, 1)));
  RETURN_IF_ERROR(ffn_b_.Reserve(std::max<int64_t>(T * max_ffn_, 1)));
  RETURN_IF_ERROR(act16_.Reserve(std::max<int64_t>(T * max_ffn_, 1)));
  RETURN_IF_ERROR(logits_.Reserve(std::max<int64_t>(R * V, 1)));
  if (max_experts_ > 0) {
    const int64_t pairs = T * max_experts_;  // worst case: every expert for every token
    RETURN_IF_ERROR(router_logits_.Reserve(pairs));
    RETURN_IF_ERROR(router_logits_h_.Reserve(pairs));
    RETURN_IF_ERROR(mean_.Reserve(T));
    RETURN_IF_ERROR(hidden_.Reserve(pairs * max_width_));
    moe_ints_ = 3 * (pairs + max_experts_) + 3 * pairs + T + 1;
    moe_floats_ = 2 * pairs;
    RETURN_IF_ERROR(moe_h_.Reserve(moe_ints_));
    RETURN_IF_ERROR(moe_d_.Reserve(moe_ints_));
    RETURN_IF_ERROR(moe_wh_.Reserve(moe_floats_));
    RETURN_IF_ERROR(moe_wd_.Reserve(moe_floats_));
  }
  return absl::OkStatus();
}

absl::Status CudaForward::Forward(const ForwardBatch& batch, EngineObserver* observer, ForwardOutput* out) {
  const int64_t H = w_.config.hidden_size.value, V = w_.vocab_size;
  int64_t T = 0, table_entries = 0;
  for (const SequenceChunk& c : batch.chunks) {
    T += static_cast<int64_t>(c.tokens.size());
    table_entries += static_cast<int64_t>(c.block_table.size());
  }
  const std::vector<int32_t> logits_rows = SelectLogitsRows(batch, V, out);
  const int64_t R = static_cast<int64_t>(logits_rows.size());
  RETURN_IF_ERROR(Reserve(T, R, table_entries));
  observer_ = observer;
  out_ = out;

  // Host metadata → one upload.
  int32_t* tokens = meta_h_.get();
  int32_t* positions = tokens + T;
  int32_t* table_begin = positions + T;
  int32_t* rows = table_begin + T;
  int32_t* tables = rows + R;
  budget_.clear();
  std::copy(logits_rows.begin(), logits_rows.end(), rows);
  int64_t t = 0, tb = 0;
  for (const SequenceChunk& c : batch.chunks) {
    const int64_t n = static_cast<int64_t>(c.tokens.size());
    std::copy(c.block_table.begin(), c.block_table.end(), tables + tb);
    for (int64_t i = 0; i < n; ++i, ++t) {
      tokens[t] = c.tokens[i];
      positions[t] = c.start_position + static_cast<int32_t>(i);
      table_begin[t] = static_cast<int32_t>(tb);
      budget_.push_back(c.budget);
    }
    tb += static_cast<int64_t>(c.block_table.size());
  }
  const int64_t meta = 3 * T + R + table_entries;
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(meta_d_.get(), meta_h_.get(), meta * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  tokens_d_ = meta_d_.get();
  positions_d_ = tokens_d_ + T;
  table_begin_d_ = positions_d_ + T;
  rows_d_ = table_begin_d_ + T;
  tables_d_ = rows_d_ + R;

  const bool learned = !dm_->pos_embed.empty();
  cuda::LaunchEmbed(dm_->embed.get(), learned ? dm_->pos_embed.get() : nullptr, tokens_d_, positions_d_,
                    static_cast<int>(T), static_cast<int>(H), x_.get(), stream_);
  out->active_counts.assign(w_.layers.size() * T, 0);
  out->weight_bytes_read = T * H * DTypeSize(w_.embed.dtype) * (learned ? 2 : 1);
  for (int layer = 0; layer < static_cast<int>(w_.layers.size()); ++layer) RETURN_IF_ERROR(RunLayer(layer, T));

  if (R > 0) {
    cuda::LaunchNorm(x_.get(), rows_d_, static_cast<int>(R), static_cast<int>(H), dm_->final_norm.get(),
                     dm_->final_norm_bias.get(), w_.config.norm_epsilon, nullptr, normed16_.get(), stream_);
    RETURN_IF_ERROR(gemm_->Bf16(normed16_.get(), static_cast<int>(R), static_cast<int>(H), dm_->head,
                                static_cast<int>(V), logits_.get(), false));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out->logits.data(), logits_.get(), R * V * sizeof(float),
                                         cudaMemcpyDeviceToHost, stream_));
    out->weight_bytes_read += w_.head.Bytes();
  }
  RETURN_IF_ERROR(Sync());
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  out_ = nullptr;
  observer_ = nullptr;
  return absl::OkStatus();
}

absl::Status CudaForward::ReportTime(int layer, LayerOp op, std::chrono::steady_clock::time_point& start) {
  if (observer_ == nullptr) return absl::OkStatus();
  RETURN_IF_ERROR(Sync());
  const auto now = std::chrono::steady_clock::now();
  observer_->OnLayerTime(layer, op, std::chrono::duration<double>(now - start).count());
  start = now;
  return absl::OkStatus();
}

absl::Status CudaForward::RunLayer(int layer, int64_t T) {
  const ModelConfig& c = w_.config;
  const LayerWeights& L = w_.layers[layer];
  const cuda::DeviceLayer& D = dm_->layers[layer];
  const int Ti = static_cast<int>(T), H = static_cast<int>(c.hidden_size.value);
  const int nh = static_cast<int>(c.num_heads.value), ng = static_cast<int>(c.num_kv_groups.value);
  const int hd = static_cast<int>(c.head_dim), q_dim = nh * hd, kv_dim = ng * hd;
  auto start = std::chrono::steady_clock::now();

  cuda::LaunchNorm(x_.get(), nullptr, Ti, H, D.input_norm.get(), D.input_norm_bias.get(), c.norm_epsilon, nullptr,
                   normed16_.get(), stream_);
  RETURN_IF_ERROR(gemm_->Bf16(normed16_.get(), Ti, H, D.q.get(), q_dim, q_.get(), false));
  RETURN_IF_ERROR(gemm_->Bf16(normed16_.get(), Ti, H, D.k.get(), kv_dim, k_.get(), false));
  RETURN_IF_ERROR(gemm_->Bf16(normed16_.get(), Ti, H, D.v.get(), kv_dim, v_.get(), false));
  cuda::LaunchAddBias(q_.get(), D.q_bias.get(), Ti, q_dim, stream_);
  cuda::LaunchAddBias(k_.get(), D.k_bias.get(), Ti, kv_dim, stream_);
  cuda::LaunchAddBias(v_.get(), D.v_bias.get(), Ti, kv_dim, stream_);
  if (!dm_->rope_cos.empty()) {
    cuda::LaunchRope(q_.get(), k_.get(), dm_->rope_cos.get(), dm_->rope_sin.get(), positions_d_, Ti, nh, ng, hd,
                     stream_);
  }
  const cuda::PagedKv kv{keys_.get() + layer * layer_kv_elems_, values_.get() + layer * layer_kv_elems_,
                         opt_.kv.block_size, ng, hd};
  const cuda::TokenPlacementView place{positions_d_, table_begin_d_, tables_d_};
  cuda::LaunchKvStore(k_.get(), v_.get(), kv, place, Ti, stream_);
  cuda::LaunchPagedAttention(q_.get(), kv, place, Ti, nh, attn16_.get(), stream_);
  RETURN_IF_ERROR(gemm_->Bf16(attn16_.get(), Ti, q_dim, D.o.get(), H, x_.get(), true));
  cuda::LaunchAddBias(x_.get(), D.o_bias.get(), Ti, H, stream_);
  out_->weight_bytes_read += L.q.Bytes() + L.k.Bytes() + L.v.Bytes() + L.o.Bytes();
  RETURN_IF_ERROR(ReportTime(layer, LayerOp::kAttention, start));

  cuda::LaunchNorm(x_.get(), nullptr, Ti, H, D.post_norm.get(), D.post_norm_bias.get(), c.norm_epsilon,
                   L.is_moe ? normed32_.get() : nullptr, normed16_.get(), stream_);
  if (L.is_moe) {
    RETURN_IF_ERROR(RunMoe(layer, T));
  } else {
    RETURN_IF_ERROR(Ffn(L.dense, D.dense, T));
  }
  return ReportTime(layer, L.is_moe ? LayerOp::kMoe : LayerOp::kFfn, start);
}

absl::Status CudaForward::Ffn(const FfnWeights& host, const cuda::DeviceFfn& f, int64_t T) {
  const int Ti = static_cast<int>(T), H = static_cast<int>(w_.config.hidden_size.value);
  const int F = static_cast<int>(f.up.rows);
  if (f.gated()) {  // silu(gate·m + b_g) ⊙ (up·m + b_u)
    RETURN_IF_ERROR(gemm_->Bf16(normed16_.get(), Ti, H, f.gate.get(), F, ffn_a_.get(), false));
    cuda::LaunchAddBias(ffn_a_.get(), f.gate_bias.get(), Ti, F, stream_);
  }
  RETURN_IF_ERROR(gemm_->Bf16(normed16_.get(), Ti, H, f.up.get(), F, ffn_b_.get(), false));
  cuda::LaunchAddBias(ffn_b_.get(), f.up_bias.get(), Ti, F, stream_);
  cuda::LaunchGatedAct(f.gated() ? ffn_a_.get() : nullptr, ffn_b_.get(), T * F, act16_.get(), stream_);
  RETURN_IF_ERROR(gemm_->Bf16(act16_.get(), Ti, F, f.down.get(), H, x_.get(), true));
  cuda::LaunchAddBias(x_.get(), f.down_bias.get(), Ti, H, stream_);
  out_->weight_bytes_read += host.gate.Bytes() + host.up.Bytes() + host.down.Bytes();
  return absl::OkStatus();
}

absl::Status CudaForward::RunMoe(int layer, int64_t T) {
  const MoeLayerWeights& moe = w_.layers[layer].moe;
  const cuda::DeviceLayer& D = dm_->layers[layer];
  const cuda::DeviceExperts& X = D.experts;
  const int Ti = static_cast<int>(T), H = static_cast<int>(w_.config.hidden_size.value);
  const int E = moe.experts.num_experts, d = static_cast<int>(moe.experts.width);

  // 1. fp32 router logits on the device, to the host for the reference routers.
  RETURN_IF_ERROR(gemm_->F32(normed32_.get(), Ti, H, D.router.get(), E, router_logits_.get(), false));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(router_logits_h_.get(), router_logits_.get(), T * E * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
  if (moe.experts.NeedsMean()) {  // mean(v) = ū·m (spec deco.md §3.3), overlaps the routing below
    RETURN_IF_ERROR(gemm_->F32(normed32_.get(), Ti, H, X.mean_vector.get(), 1, mean_.get(), false));
  }
  RETURN_IF_ERROR(Sync());  // TODO(cuda): route on the device to drop this sync (and allow CUDA graphs)

  // 2. Routing on the host, exactly as the CPU backend.
  const Routing& routed = router_.Route(*moe.router, router_logits_h_.get(), E, budget_, layer, opt_.dense_experts,
                                        observer_, out_);
  const Routing* r = &routed;

  // 3. Compaction: group the (token, expert) pairs by expert, cut groups into tiles.
  groups_.Build(*r, E);
  const int32_t S = static_cast<int32_t>(r->experts.size());
  const int32_t max_tiles = S + E;
  int32_t* tile_expert = moe_h_.get();
  int32_t* tile_begin = tile_expert + max_tiles;
  int32_t* tile_count = tile_begin + max_tiles;
  int32_t* slot_token = tile_count + max_tiles;
  int32_t* token_begin = slot_token + S;
  int32_t* entry_expert = token_begin + T + 1;
  int32_t* entry_slot = entry_expert + S;
  float* slot_weight = moe_wh_.get();
  float* entry_weight = slot_weight + S;
  std::copy(groups_.slot_token.begin(), groups_.slot_token.end(), slot_token);
  std::copy(groups_.slot_weight.begin(), groups_.slot_weight.end(), slot_weight);
  std::copy(groups_.slot_of_entry.begin(), groups_.slot_of_entry.end(), entry_slot);
  std::copy(r->experts.begin(), r->experts.end(), entry_expert);
  std::copy(r->weights.begin(), r->weights.end(), entry_weight);
  std::copy(r->offsets.begin(), r->offsets.end() - 1, token_begin);
  token_begin[T] = S;
  int32_t tiles = 0;
  const int32_t union_size = static_cast<int32_t>(groups_.active.size());
  for (int e : groups_.active) {
    const int32_t b = groups_.offsets[e], n = groups_.size(e);
    for (int32_t i = 0; i < n; i += X.max_tile, ++tiles) {
      tile_expert[tiles] = e;
      tile_begin[tiles] = b + i;
      tile_count[tiles] = std::min(X.max_tile, n - i);
    }
  }
  const int64_t bank_bytes = (moe.experts.gated() ? 3 : 2) * moe.experts.width * H * DTypeSize(moe.experts.up.dtype);
  out_->weight_bytes_read += moe.router_weight.Bytes() + union_size * bank_bytes;

  if (S > 0) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(moe_d_.get(), moe_h_.get(), (entry_slot + S - moe_h_.get()) * sizeof(int32_t),
                                         cudaMemcpyHostToDevice, stream_));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(moe_wd_.get(), moe_wh_.get(), 2 * S * sizeof(float),
                                         cudaMemcpyHostToDevice, stream_));
    const int32_t* base = moe_d_.get();
    const float* wbase = moe_wd_.get();
    cuda::ExpertUpArgs up{};
    up.up = X.up.get();
    up.gate = X.gate.empty() ? nullptr : X.gate.get();
    up.up_bias = X.up_bias.get();
    up.gate_bias = X.gate_bias.get();
    up.gamma = X.gamma.get();
    up.mean = mean_.get();
    up.m = normed32_.get();
    up.tile_expert = base + (tile_expert - moe_h_.get());
    up.tile_begin = base + (tile_begin - moe_h_.get());
    up.tile_count = base + (tile_count - moe_h_.get());
    up.slot_token = base + (slot_token - moe_h_.get());
    up.slot_weight = wbase;
    up.hidden = hidden_.get();
    up.H = H;
    up.d = d;
    up.num_tiles = tiles;
    up.max_tile = X.max_tile;
    up.eps = X.epsilon;
    up.act = X.act;
    cuda::LaunchExpertUp(up, stream_);

    cuda::ExpertDownArgs down{};
    down.down = X.down.get();
    down.expert_stride = X.down_expert_stride;
    down.row_stride = X.down_row_stride;
    down.down_bias = X.down_bias.get();
    down.token_begin = base + (token_begin - moe_h_.get());
    down.entry_expert = base + (entry_expert - moe_h_.get());
    down.entry_slot = base + (entry_slot - moe_h_.get());
    down.entry_weight = wbase + S;
    down.hidden = hidden_.get();
    down.y = x_.get();
    down.T = Ti;
    down.H = H;
    down.d = d;
    cuda::LaunchExpertDown(down, stream_);
  }
  if (moe.shared) RETURN_IF_ERROR(Ffn(*moe.shared, D.shared, T));
  return absl::OkStatus();
}

}  // namespace

bool CudaBackendBuilt() { return true; }

CudaProbe ProbeCudaDevices() {
  CudaProbe probe;
  const cudaError_t e = cudaGetDeviceCount(&probe.device_count);
  if (e != cudaSuccess) {
    probe.device_count = 0;
    probe.error = cudaGetErrorString(e);
  } else if (probe.device_count == 0) {
    probe.error = "cudaGetDeviceCount returned 0";
  }
  return probe;
}

absl::StatusOr<std::unique_ptr<ForwardBackend>> CreateCudaForward(const ModelWeights& weights,
                                                                  const BackendOptions& options) {
  auto f = std::make_unique<CudaForward>(weights, options);
  RETURN_IF_ERROR(f->Init());
  return f;
}

}  // namespace moeserve
