#include "engine/backend/cuda/cuda_forward.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/backend/cuda/cuda_status.h"
#include "engine/backend/cuda/decode_graphs.h"
#include "engine/backend/cuda/device_buffer.h"
#include "engine/backend/cuda/device_model.h"
#include "engine/backend/cuda/device_router.h"
#include "engine/backend/cuda/gemm.h"
#include "engine/backend/cuda/kernels.h"
#include "engine/backend/cuda/moe_workspace.h"
#include "engine/backend/cuda/routing_readback.h"
#include "engine/logits_rows.h"
#include "engine/moe/route_batch.h"

namespace moeserve {
namespace {

using cuda::bf16;
using cuda::DeviceBuffer;
using cuda::PinnedBuffer;

// Expert-major down projection needs partials [T·E, H] in fp32; above this many bytes (large
// prefills) the per-token down kernel is used instead. Decided from T alone, never from data.
constexpr int64_t kGroupedDownMaxBytes = int64_t{256} << 20;

bool EnvIsOne(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, "1") == 0;
}

// Rounds a metadata capacity up so that growing block tables rarely reallocate (which would
// drop the captured graphs).
int64_t RoundUpPow2(int64_t n) {
  int64_t p = 64;
  while (p < n) p <<= 1;
  return p;
}

class CudaForward final : public ForwardBackend {
 public:
  CudaForward(const ModelWeights& w, const BackendOptions& o)
      : w_(w), opt_(o), graphs_(cuda::CudaGraphsEnabledByEnv()) {}
  ~CudaForward() override {
    if (stream_ != nullptr) {
      cudaStreamSynchronize(stream_);
      graphs_.Clear();
      gemm_.reset();
      cudaStreamDestroy(stream_);
    }
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }

  absl::Status Init();
  absl::Status Forward(const ForwardBatch& batch, EngineObserver* observer, ForwardOutput* out) override;
  std::string device() const override { return device_name_; }
  std::string kernels() const override {
    return absl::StrCat("cuda: cuBLAS bf16 GEMMs, device routing, grouped expert kernels, decode graphs ",
                        graphs_.enabled() ? "on" : "off");
  }
  // Device bytes held: weights, KV cache and workspaces.
  int64_t device_bytes() const;

 private:
  absl::Status Reserve(int64_t T, int64_t R, int64_t table_entries);
  // Enqueues the whole step on stream_ (embedding → layers → logits rows), reading only the
  // uploaded metadata. With no host-routed layer it neither synchronises nor allocates nor
  // branches on data, so it can be captured (`capturing`: events are recorded as graph nodes).
  absl::Status EnqueueStep(int64_t T, int64_t R);
  absl::Status RunLayer(int layer, int64_t T);
  absl::Status RunMoe(int layer, int64_t T);
  // The reference Router for a layer the device does not route; fills the layer's dense routing.
  absl::Status RouteOnHost(int layer, int64_t T);
  absl::Status Ffn(const cuda::DeviceFfn& f, int64_t T);
  absl::Status Sync() { return cuda::CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }
  absl::Status Mark(int index);
  // After the step's one synchronisation: active counts, bytes read, the observer's calls.
  void Report(int64_t T, int64_t R, EngineObserver* observer, ForwardOutput* out);

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
  std::vector<int> moe_slot_;                 // layer -> index among the MoE layers (-1: dense)
  std::vector<cuda::DeviceRouter> routers_;   // per layer (MoE layers only)
  int host_routed_layers_ = 0;
  bool grouped_down_ = false;                 // this step's down path

  // The step's metadata: ints [tokens T][positions T][table_begin T][max_experts T][rows R]
  // [tables ...], floats [min_weight T][k_scale T]. Offsets depend on (T, R) only.
  PinnedBuffer<int32_t> meta_h_;
  DeviceBuffer<int32_t> meta_d_;
  PinnedBuffer<float> fmeta_h_;
  DeviceBuffer<float> fmeta_d_;
  const int32_t *tokens_d_ = nullptr, *positions_d_ = nullptr, *table_begin_d_ = nullptr, *rows_d_ = nullptr,
                *tables_d_ = nullptr, *max_experts_d_ = nullptr;
  const float *min_weight_d_ = nullptr, *k_scale_d_ = nullptr;
  // Workspaces [T, ...], grown at most once per larger batch.
  DeviceBuffer<float> x_, normed32_, q_, k_, v_, ffn_a_, ffn_b_, logits_;
  DeviceBuffer<bf16> normed16_, attn16_, act16_;
  cuda::MoeWorkspace moe_;
  // Timing marks: before layer 0, then after each layer's attention and FFN/MoE block.
  std::vector<cudaEvent_t> events_;
  bool capturing_ = false;
  cuda::DecodeGraphs graphs_;

  std::vector<ExpertBudget> budget_;  // host-routed layers
  BatchRouter router_;
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

  const bool force_host = EnvIsOne("MOESERVE_CUDA_HOST_ROUTING");
  routers_.resize(w_.layers.size());
  int moe_layers = 0;
  for (size_t i = 0; i < w_.layers.size(); ++i) {
    const LayerWeights& L = w_.layers[i];
    max_q_ = std::max(max_q_, L.q.rows);
    max_kv_ = std::max(max_kv_, L.k.rows);
    if (!L.is_moe) {
      moe_slot_.push_back(-1);
      max_ffn_ = std::max(max_ffn_, L.dense.up.rows);
      continue;
    }
    moe_slot_.push_back(moe_layers++);
    if (L.moe.shared) max_ffn_ = std::max(max_ffn_, L.moe.shared->up.rows);
    max_experts_ = std::max<int64_t>(max_experts_, L.moe.experts.num_experts);
    max_width_ = std::max(max_width_, L.moe.experts.width);
    RETURN_IF_ERROR(cuda::BuildDeviceRouter(L.moe.router_spec, force_host, routers_[i]));
    if (!routers_[i].on_device) ++host_routed_layers_;
  }
  events_.resize(2 * w_.layers.size() + 1);
  for (cudaEvent_t& ev : events_) CUDA_RETURN_IF_ERROR(cudaEventCreate(&ev));
  return absl::OkStatus();
}

int64_t CudaForward::device_bytes() const {
  int64_t b = dm_ ? dm_->bytes : 0;
  b += keys_.bytes() + values_.bytes() + meta_d_.bytes() + fmeta_d_.bytes();
  for (const DeviceBuffer<float>* f : {&x_, &normed32_, &q_, &k_, &v_, &ffn_a_, &ffn_b_, &logits_, &moe_.router_logits,
                                       &moe_.mean, &moe_.hidden, &moe_.part, &moe_.weight, &moe_.floats}) {
    b += f->bytes();
  }
  b += moe_.flags.bytes() + moe_.num_active.bytes() + moe_.union_size.bytes() + moe_.ints.bytes();
  return b + normed16_.bytes() + attn16_.bytes() + act16_.bytes();
}

absl::Status CudaForward::Reserve(int64_t T, int64_t R, int64_t table_entries) {
  const int64_t H = w_.config.hidden_size.value, V = w_.vocab_size;
  RETURN_IF_ERROR(meta_h_.Reserve(RoundUpPow2(4 * T + R + table_entries)));
  RETURN_IF_ERROR(meta_d_.Reserve(RoundUpPow2(4 * T + R + table_entries)));
  RETURN_IF_ERROR(fmeta_h_.Reserve(RoundUpPow2(2 * T)));
  RETURN_IF_ERROR(fmeta_d_.Reserve(RoundUpPow2(2 * T)));
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
  grouped_down_ = T * max_experts_ * H * static_cast<int64_t>(sizeof(float)) <= kGroupedDownMaxBytes;
  if (max_experts_ > 0) {
    const int64_t layers = *std::max_element(moe_slot_.begin(), moe_slot_.end()) + 1;
    RETURN_IF_ERROR(moe_.Reserve(T, layers, max_experts_, max_width_, H, grouped_down_));
  }
  return absl::OkStatus();
}

absl::Status CudaForward::Forward(const ForwardBatch& batch, EngineObserver* observer, ForwardOutput* out) {
  const int64_t V = w_.vocab_size;
  int64_t T = 0, table_entries = 0;
  bool decode = !batch.chunks.empty();
  for (const SequenceChunk& c : batch.chunks) {
    T += static_cast<int64_t>(c.tokens.size());
    table_entries += static_cast<int64_t>(c.block_table.size());
    decode = decode && c.tokens.size() == 1;
  }
  const std::vector<int32_t> logits_rows = SelectLogitsRows(batch, V, out);
  const int64_t R = static_cast<int64_t>(logits_rows.size());
  const int64_t allocations = cuda::DeviceAllocationCount();
  RETURN_IF_ERROR(Reserve(T, R, table_entries));
  if (cuda::DeviceAllocationCount() != allocations) graphs_.Clear();  // they hold the old pointers

  // Host metadata → two uploads, before any graph replay reads them.
  int32_t* tokens = meta_h_.get();
  int32_t* positions = tokens + T;
  int32_t* table_begin = positions + T;
  int32_t* max_experts = table_begin + T;
  int32_t* rows = max_experts + T;
  int32_t* tables = rows + R;
  float* min_weight = fmeta_h_.get();
  float* k_scale = min_weight + T;
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
      max_experts[t] = c.budget.max_experts;
      min_weight[t] = c.budget.min_weight;
      k_scale[t] = c.budget.k_scale;
      budget_.push_back(c.budget);
    }
    tb += static_cast<int64_t>(c.block_table.size());
  }
  const int64_t meta = 4 * T + R + table_entries;
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(meta_d_.get(), meta_h_.get(), meta * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(fmeta_d_.get(), fmeta_h_.get(), 2 * T * sizeof(float), cudaMemcpyHostToDevice, stream_));
  tokens_d_ = meta_d_.get();
  positions_d_ = tokens_d_ + T;
  table_begin_d_ = positions_d_ + T;
  max_experts_d_ = table_begin_d_ + T;
  rows_d_ = max_experts_d_ + T;
  tables_d_ = rows_d_ + R;
  min_weight_d_ = fmeta_d_.get();
  k_scale_d_ = min_weight_d_ + T;

  // Pure decode steps replay a graph per (T, R); prefill, mixed steps and models with
  // host-routed layers run eagerly.
  bool eager = true;
  if (graphs_.enabled() && decode && host_routed_layers_ == 0) {
    capturing_ = true;
    const absl::Status s = graphs_.Run((T << 32) | R, stream_, [&] { return EnqueueStep(T, R); });
    capturing_ = false;
    if (absl::IsUnavailable(s)) {
      graphs_.Disable();  // capture is not possible here (e.g. the library refused): eager from now on
    } else {
      RETURN_IF_ERROR(s);
      eager = false;
    }
  }
  if (eager) RETURN_IF_ERROR(EnqueueStep(T, R));

  // Everything the host needs, copied back once.
  if (R > 0) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out->logits.data(), logits_.get(), R * V * sizeof(float),
                                         cudaMemcpyDeviceToHost, stream_));
  }
  if (max_experts_ > 0 && T > 0) {
    const int64_t layers = *std::max_element(moe_slot_.begin(), moe_slot_.end()) + 1;
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(moe_.num_active_h.get(), moe_.num_active.get(),
                                         layers * T * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(moe_.union_size_h.get(), moe_.union_size.get(), layers * sizeof(int32_t),
                                         cudaMemcpyDeviceToHost, stream_));
    if (observer != nullptr) {
      const int64_t P = layers * T * max_experts_;
      CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(moe_.flags_h.get(), moe_.flags.get(), P, cudaMemcpyDeviceToHost, stream_));
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(moe_.weight_h.get(), moe_.weight.get(), P * sizeof(float),
                                           cudaMemcpyDeviceToHost, stream_));
    }
  }
  RETURN_IF_ERROR(Sync());
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  Report(T, R, observer, out);
  return absl::OkStatus();
}

void CudaForward::Report(int64_t T, int64_t R, EngineObserver* observer, ForwardOutput* out) {
  const int64_t H = w_.config.hidden_size.value;
  const bool learned = !dm_->pos_embed.empty();
  out->active_counts.assign(w_.layers.size() * T, 0);
  int64_t bytes = T * H * DTypeSize(w_.embed.dtype) * (learned ? 2 : 1);
  auto ffn_bytes = [](const FfnWeights& f) { return f.gate.Bytes() + f.up.Bytes() + f.down.Bytes(); };
  Routing routing;
  for (size_t layer = 0; layer < w_.layers.size(); ++layer) {
    const LayerWeights& L = w_.layers[layer];
    bytes += L.q.Bytes() + L.k.Bytes() + L.v.Bytes() + L.o.Bytes();
    if (!L.is_moe) {
      bytes += ffn_bytes(L.dense);
      continue;
    }
    const MoeLayerWeights& moe = L.moe;
    const int slot = moe_slot_[layer], E = moe.experts.num_experts;
    const int32_t* active = moe_.num_active_h.get() + slot * T;
    std::copy(active, active + T, out->active_counts.begin() + layer * T);
    const int64_t bank_bytes =
        (moe.experts.gated() ? 3 : 2) * moe.experts.width * H * DTypeSize(moe.experts.up.dtype);
    bytes += moe.router_weight.Bytes() + (T > 0 ? moe_.union_size_h[slot] : 0) * bank_bytes;
    if (moe.shared) bytes += ffn_bytes(*moe.shared);
    if (observer != nullptr) {
      const int64_t offset = slot * T * max_experts_;
      cuda::RoutingFromDense(moe_.flags_h.get() + offset, moe_.weight_h.get() + offset, active, T, E, routing);
      observer->OnRouting(static_cast<int>(layer), routing);
    }
  }
  if (R > 0) bytes += w_.head.Bytes();
  out->weight_bytes_read = bytes;
  if (observer == nullptr) return;
  // Device time of each block between its marks (graph replays included).
  for (size_t layer = 0; layer < w_.layers.size(); ++layer) {
    const LayerOp ops[2] = {LayerOp::kAttention, w_.layers[layer].is_moe ? LayerOp::kMoe : LayerOp::kFfn};
    for (int i = 0; i < 2; ++i) {
      float ms = 0.0f;
      if (cudaEventElapsedTime(&ms, events_[2 * layer + i], events_[2 * layer + i + 1]) != cudaSuccess) {
        cudaGetLastError();  // timing unavailable: report nothing rather than fail the step
        continue;
      }
      observer->OnLayerTime(static_cast<int>(layer), ops[i], ms * 1e-3);
    }
  }
}

absl::Status CudaForward::Mark(int index) {
  // Inside a capture an event record must be "external" to become a node of the graph.
  return cuda::CudaStatus(capturing_ ? cudaEventRecordWithFlags(events_[index], stream_, cudaEventRecordExternal)
                                     : cudaEventRecord(events_[index], stream_),
                          "cudaEventRecord");
}

absl::Status CudaForward::EnqueueStep(int64_t T, int64_t R) {
  const int64_t H = w_.config.hidden_size.value, V = w_.vocab_size;
  const bool learned = !dm_->pos_embed.empty();
  RETURN_IF_ERROR(Mark(0));
  cuda::LaunchEmbed(dm_->embed.get(), learned ? dm_->pos_embed.get() : nullptr, tokens_d_, positions_d_,
                    static_cast<int>(T), static_cast<int>(H), x_.get(), stream_);
  for (int layer = 0; layer < static_cast<int>(w_.layers.size()); ++layer) RETURN_IF_ERROR(RunLayer(layer, T));
  if (R > 0) {
    cuda::LaunchNorm(x_.get(), rows_d_, static_cast<int>(R), static_cast<int>(H), dm_->final_norm.get(),
                     dm_->final_norm_bias.get(), w_.config.norm_epsilon, nullptr, normed16_.get(), stream_);
    RETURN_IF_ERROR(gemm_->Bf16(normed16_.get(), static_cast<int>(R), static_cast<int>(H), dm_->head,
                                static_cast<int>(V), logits_.get(), false));
  }
  return cuda::CudaStatus(cudaPeekAtLastError(), "kernel launch");
}

absl::Status CudaForward::RunLayer(int layer, int64_t T) {
  const ModelConfig& c = w_.config;
  const LayerWeights& L = w_.layers[layer];
  const cuda::DeviceLayer& D = dm_->layers[layer];
  const int Ti = static_cast<int>(T), H = static_cast<int>(c.hidden_size.value);
  const int nh = static_cast<int>(c.num_heads.value), ng = static_cast<int>(c.num_kv_groups.value);
  const int hd = static_cast<int>(c.head_dim), q_dim = nh * hd, kv_dim = ng * hd;

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
  RETURN_IF_ERROR(Mark(2 * layer + 1));

  cuda::LaunchNorm(x_.get(), nullptr, Ti, H, D.post_norm.get(), D.post_norm_bias.get(), c.norm_epsilon,
                   L.is_moe ? normed32_.get() : nullptr, normed16_.get(), stream_);
  if (L.is_moe) {
    RETURN_IF_ERROR(RunMoe(layer, T));
  } else {
    RETURN_IF_ERROR(Ffn(D.dense, T));
  }
  return Mark(2 * layer + 2);
}

absl::Status CudaForward::Ffn(const cuda::DeviceFfn& f, int64_t T) {
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
  return absl::OkStatus();
}

absl::Status CudaForward::RouteOnHost(int layer, int64_t T) {
  const MoeLayerWeights& moe = w_.layers[layer].moe;
  const int E = moe.experts.num_experts, slot = moe_slot_[layer];
  float* logits_h = moe_.router_logits_h.get();
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits_h, moe_.router_logits.get(), T * E * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
  RETURN_IF_ERROR(Sync());  // also orders the pinned staging below after earlier uploads
  // Observer and active counts are reported at the end of the step like the device layers;
  // --dense-experts widening happens in the device grouping, so both stay off here.
  ForwardOutput scratch;
  scratch.active_counts.assign(w_.layers.size() * T, 0);
  const Routing& r = router_.Route(*moe.router, logits_h, E, budget_, layer, false, nullptr, &scratch);
  const int64_t offset = slot * T * max_experts_;
  uint8_t* flags_h = moe_.flags_h.get() + offset;
  float* weight_h = moe_.weight_h.get() + offset;
  int32_t* active_h = moe_.num_active_h.get() + slot * T;
  cuda::DenseFromRouting(r, E, flags_h, weight_h, active_h);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(moe_.layer_flags(slot), flags_h, T * E, cudaMemcpyHostToDevice, stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(moe_.layer_weight(slot), weight_h, T * E * sizeof(float),
                                       cudaMemcpyHostToDevice, stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(moe_.layer_num_active(slot), active_h, T * sizeof(int32_t),
                                       cudaMemcpyHostToDevice, stream_));
  return absl::OkStatus();
}

absl::Status CudaForward::RunMoe(int layer, int64_t T) {
  const MoeLayerWeights& moe = w_.layers[layer].moe;
  const cuda::DeviceLayer& D = dm_->layers[layer];
  const cuda::DeviceExperts& X = D.experts;
  const int Ti = static_cast<int>(T), H = static_cast<int>(w_.config.hidden_size.value);
  const int E = moe.experts.num_experts, d = static_cast<int>(moe.experts.width);
  const int slot = moe_slot_[layer];

  // 1. fp32 router logits (and ū·m, spec deco.md §3.3) on the device.
  RETURN_IF_ERROR(gemm_->F32(normed32_.get(), Ti, H, D.router.get(), E, moe_.router_logits.get(), false));
  if (moe.experts.NeedsMean()) {
    RETURN_IF_ERROR(gemm_->F32(normed32_.get(), Ti, H, X.mean_vector.get(), 1, moe_.mean.get(), false));
  }

  // 2. Routing into the layer's dense form: on the device, or with the reference router on the
  //    host where the device router does not apply (cuda::DeviceRouter, never in a graph).
  if (routers_[layer].on_device) {
    cuda::RouterArgs a = routers_[layer].args;
    a.T = Ti;
    a.logits = moe_.router_logits.get();
    a.min_weight = min_weight_d_;
    a.k_scale = k_scale_d_;
    a.max_experts = max_experts_d_;
    a.flags = moe_.layer_flags(slot);
    a.weight = moe_.layer_weight(slot);
    a.num_active = moe_.layer_num_active(slot);
    cuda::LaunchRoute(a, stream_);
  } else {
    RETURN_IF_ERROR(RouteOnHost(layer, T));
  }

  // 3. Grouping by expert (CSR by token, slots by expert, tiles, union size) on the device;
  //    --dense-experts widens the evaluated set to every expert there.
  const cuda::GroupArgs g = moe_.Group(slot, E, X.max_tile, opt_.dense_experts);
  cuda::LaunchGroupByExpert(g, stream_);
  const int max_tiles = static_cast<int>(cuda::MaxExpertTiles(T, E, X.max_tile));

  // 4. Experts: up (+ activation, routing weight) per tile, then down.
  cuda::ExpertUpArgs up{};
  up.up = X.up.get();
  up.gate = X.gate.empty() ? nullptr : X.gate.get();
  up.up_bias = X.up_bias.get();
  up.gate_bias = X.gate_bias.get();
  up.gamma = X.gamma.get();
  up.mean = moe_.mean.get();
  up.m = normed32_.get();
  up.tile_expert = g.tile_expert;
  up.tile_begin = g.tile_begin;
  up.tile_count = g.tile_count;
  up.num_tiles = g.num_tiles;
  up.slot_token = g.slot_token;
  up.slot_weight = g.slot_weight;
  up.hidden = moe_.hidden.get();
  up.H = H;
  up.d = d;
  up.max_tiles = max_tiles;
  up.max_tile = X.max_tile;
  up.eps = X.epsilon;
  up.act = X.act;
  cuda::LaunchExpertUp(up, stream_);

  if (grouped_down_) {
    cuda::ExpertDownGroupedArgs down{};
    down.down = X.down.get();
    down.expert_stride = X.down_expert_stride;
    down.row_stride = X.down_row_stride;
    down.down_bias = X.down_bias.get();
    down.tile_expert = g.tile_expert;
    down.tile_begin = g.tile_begin;
    down.tile_count = g.tile_count;
    down.num_tiles = g.num_tiles;
    down.hidden = moe_.hidden.get();
    down.part = moe_.part.get();
    down.token_begin = g.token_begin;
    down.entry_expert = g.entry_expert;
    down.entry_slot = g.entry_slot;
    down.entry_weight = g.entry_weight;
    down.y = x_.get();
    down.T = Ti;
    down.H = H;
    down.d = d;
    down.max_tiles = max_tiles;
    down.max_tile = X.max_tile;
    cuda::LaunchExpertDownGrouped(down, stream_);
  } else {
    cuda::ExpertDownArgs down{};
    down.down = X.down.get();
    down.expert_stride = X.down_expert_stride;
    down.row_stride = X.down_row_stride;
    down.down_bias = X.down_bias.get();
    down.token_begin = g.token_begin;
    down.entry_expert = g.entry_expert;
    down.entry_slot = g.entry_slot;
    down.entry_weight = g.entry_weight;
    down.hidden = moe_.hidden.get();
    down.y = x_.get();
    down.T = Ti;
    down.H = H;
    down.d = d;
    cuda::LaunchExpertDown(down, stream_);
  }
  if (moe.shared) RETURN_IF_ERROR(Ffn(D.shared, T));
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
