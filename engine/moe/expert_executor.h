// Expert-major execution of a routed MoE layer: tokens are grouped by expert, each active
// expert's up/gate rows are read once for all tokens that chose it, inactive experts are never
// touched; the down projection walks each output row once over the active experts' slices
// and adds every token's contribution, per token or, where experts are shared, expert by
// expert with each block of an expert's rows loaded once for all its tokens (same bits).
//
// Thread-safety: one executor per serving loop; Run uses the pool and reuses its workspaces.
#ifndef MOESERVE_ENGINE_MOE_EXPERT_EXECUTOR_H_
#define MOESERVE_ENGINE_MOE_EXPERT_EXECUTOR_H_

#include <cstdint>
#include <vector>

#include "engine/kernels/cpu/matmul.h"
#include "engine/kernels/cpu/panel_matmul.h"
#include "engine/kernels/cpu/thread_pool.h"
#include "engine/moe/expert_bank.h"
#include "engine/moe/expert_groups.h"
#include "engine/moe/routing.h"

namespace moeserve {

class ExpertExecutor {
 public:
  // How the down projection walks the batch. Both give the same bits; kAuto takes expert-major
  // where experts are shared by two or more tokens on average and the kernels have it.
  enum class DownOrder { kAuto, kPerToken, kExpertMajor };

  explicit ExpertExecutor(ThreadPool* pool) : pool_(pool) {}

  // For tests and benchmarks (kExpertMajor still falls back where the kernels lack it).
  void set_down_order(DownOrder order) { down_order_ = order; }

  // y[t, :] += Σ_{entries of t} weight · Expert_e(m[t, :]). m and y are [tokens, H].
  // `then`, where given, is one more matmul whose output rows are y's (the shared expert's down
  // projection): each thread runs it on its rows right after the routed experts' sums there,
  // so both share one parallel region and every element gets the routed sum first, as if the
  // job ran after Run.
  void Run(const ExpertBank& bank, const float* m, int64_t num_tokens, const Routing& routing, float* y,
           const MatMulJob* then = nullptr);

  // Number of distinct experts evaluated by the last Run (the batch's expert union).
  int last_union_size() const { return static_cast<int>(groups_.active.size()); }

 private:
  void UpAndActivate(const ExpertBank& bank, const float* m, int e, int thread_slot);
  // The down projection for rows [r0, r1) where the down slices are packed in panels.
  void DownPanels(const ExpertBank& bank, int64_t r0, int64_t r1, float* y);

  ThreadPool* pool_;
  DownOrder down_order_ = DownOrder::kAuto;
  // Workspaces, grown on demand and then reused.
  ExpertGroups groups_;                  // the routing's entries grouped by expert
  std::vector<const void*> segment_base_;  // per routing entry: its expert's down slice
  std::vector<const float*> segment_vec_;  // per routing entry: its scaled activations
  std::vector<const float*> segment_scale_;  // per routing entry: its down slice's row scales (int8)
  std::vector<float> token_mean_;        // NormSiLU mean per token
  std::vector<float> hidden_;            // [entries, d] scaled activations
  std::vector<uint16_t> hidden_bf16_;    // the same rounded to bf16 (bf16 × bf16 kernels only)
  std::vector<const uint16_t*> segment_vec_bf16_;  // per routing entry, into hidden_bf16_
  PanelInput up_input_;                            // the layer's input m prepared for panel up rows
  PanelInput down_input_;                          // hidden_ prepared for panel down slices
  PanelInput then_input_;                          // Run's `then` job's input, where it is in panels
  std::vector<const void*> grouped_base_;          // per active expert: its down slice
  std::vector<int32_t> grouped_begin_;             // per active expert: its first grouped entry
  struct ThreadBuffers {
    std::vector<float> x, u, z;  // gathered inputs [n, H]; up and gate outputs [n, d]
    PanelInput up_input;         // an expert's tokens gathered from up_input_
  };
  std::vector<ThreadBuffers> thread_buffers_;
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_MOE_EXPERT_EXECUTOR_H_
