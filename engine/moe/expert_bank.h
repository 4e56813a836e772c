// The routed experts of one MoE layer, in either export layout:
//  - BlockFFN/DECO: up/gate [E·d, H] (expert e = rows e·d..), down [H, E·d] (columns e·d..);
//  - stacked (top-k/ReMoE/TopP, SoftMoE): up/gate [E, d, H], down [E, H, d].
// Both up layouts are the same memory; only the down view differs.
#ifndef MOESERVE_ENGINE_MOE_EXPERT_BANK_H_
#define MOESERVE_ENGINE_MOE_EXPERT_BANK_H_

#include <cstdint>
#include <vector>

#include "engine/kernels/cpu/weight_matrix.h"
#include "engine/moe/moe_types.h"

namespace moeserve {

struct ExpertBank {
  int num_experts = 0;
  int64_t width = 0;   // d, units per expert
  int64_t hidden = 0;  // H
  WeightMatrix up;     // [E·d, H]
  WeightMatrix gate;   // [E·d, H]; empty when experts are not gated
  WeightMatrix down;   // [H, E·d] (BlockFFN) or [E·H, d] (stacked)
  bool down_stacked = false;
  ExpertAct act = ExpertAct::kSilu;
  float epsilon = 1e-5f;
  std::vector<float> act_norm_weight;  // γ [d], shared by all experts (norm_silu variants)
  // ū [H]: mean of the rows of the activation's input projection (gate if gated, else up),
  // so that the NormSiLU mean over all E·d units is one dot product (spec §3.3).
  std::vector<float> mean_vector;
  // Optional biases (SoftMoE `add_bias_linear`), fp32, empty when absent: up/gate [E·d]
  // (expert e = e·d..), down [E·H]. The down bias is part of the expert's output, so it is
  // scaled by the routing weight like the rest (spec softmoe.md §7.2.3).
  std::vector<float> up_bias, gate_bias, down_bias;

  bool gated() const { return !gate.empty(); }
  bool NeedsMean() const { return act == ExpertAct::kNormSilu || act == ExpertAct::kNormSiluNorms; }
  WeightMatrix Up(int e) const { return up.RowBlock(e * width, width); }
  WeightMatrix Gate(int e) const { return gate.RowBlock(e * width, width); }
  WeightMatrix Down(int e) const {
    return down_stacked ? down.RowBlock(e * hidden, hidden) : down.ColBlock(e * width, width);
  }
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_MOE_EXPERT_BANK_H_
