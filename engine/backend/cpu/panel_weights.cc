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
    // An expert's rows are a view from row e·d on, which must start a panel.
    if (moe.experts.width % cpu::kPanelRows == 0) {
      packer.Pack(moe.experts.up);
      packer.Pack(moe.experts.gate);
    }
  }
  // A tied head is the embedding, whose rows the forward pass looks up: the head gets its own
  // packed copy.
  packer.Pack(w.head);
  return packer.count();
}

}  // namespace moeserve
