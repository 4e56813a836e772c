#include "engine/backend/cpu/panel_weights.h"

#include "engine/kernels/cpu/matmul.h"
#include "engine/kernels/cpu/panel_pack.h"

namespace moeserve {
namespace {

class Packer {
 public:
  explicit Packer(ModelWeights& w) : w_(w) {}

  void Pack(WeightMatrix& m) {
    if (m.empty() || m.panels || !UsesPanels(m.dtype)) return;
    w_.panel_storage.emplace_back();
    m = PackPanels(m, w_.panel_storage.back());
    ++count_;
  }
  void Pack(FfnWeights& f) {
    Pack(f.gate);
    Pack(f.up);
    Pack(f.down);
  }
  int count() const { return count_; }

 private:
  ModelWeights& w_;
  int count_ = 0;
};

}  // namespace

int PackWeightsInPanels(ModelWeights& w) {
  Packer packer(w);
  for (LayerWeights& layer : w.layers) {
    packer.Pack(layer.q);
    packer.Pack(layer.k);
    packer.Pack(layer.v);
    packer.Pack(layer.o);
    if (!layer.is_moe) {
      packer.Pack(layer.dense);
      continue;
    }
    MoeLayerWeights& moe = layer.moe;
    if (moe.shared) packer.Pack(*moe.shared);
    // An expert's rows are a view from row e·d (up, gate) or e·H (stacked down) on, which
    // must start a panel.
    ExpertBank& bank = moe.experts;
    if (bank.width % cpu::kPanelRows == 0) {
      packer.Pack(bank.up);
      packer.Pack(bank.gate);
    }
    // The down slices in int8, and in bf16 only under AMX: with vdpbf16ps, bf16 ones stay
    // row-major for the grouped kernel, which keeps a token's sum over its experts in one
    // accumulator and measured faster than panels (moe_layer_bench, batch 1 / 16: 38.7 / 300.7
    // us per layer against 44.4 / 390.8). Under AMX panels won (DECO-0.1B MoE layers per step:
    // pp512 100 -> 70 ms, batch 1 1.95 -> 1.85 ms, batch 16 7.7 -> 8.6 ms).
    if (ExpertDownInPanels(bank.down.dtype) && bank.down_stacked && bank.hidden % cpu::kPanelRows == 0) {
      packer.Pack(bank.down);
    }
  }
  // A tied head is the embedding, whose rows the forward pass looks up: the head gets its own
  // packed copy.
  packer.Pack(w.head);
  return packer.count();
}

}  // namespace moeserve
