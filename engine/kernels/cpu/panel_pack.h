// Repacking of a row-major bf16 or int8 weight matrix into the panel layout (panel_layout.h),
// once at load, for the panel kernels.
#ifndef MOESERVE_ENGINE_KERNELS_CPU_PANEL_PACK_H_
#define MOESERVE_ENGINE_KERNELS_CPU_PANEL_PACK_H_

#include <memory>

#include "engine/kernels/cpu/weight_matrix.h"

namespace moeserve {

// Memory of a packed matrix, 64-byte aligned.
struct PanelStorage {
  std::unique_ptr<unsigned char[]> bytes;
  // int8 only, padded to whole panels for the kernels: Σ_c q[r, c] and the row scales.
  std::unique_ptr<int32_t[]> row_sums;
  std::unique_ptr<float[]> scales;
};

// The panel form of `m` (row-major bf16 or int8; int8 keeps its row scales and gains row
// sums), its memory in `storage`.
WeightMatrix PackPanels(const WeightMatrix& m, PanelStorage& storage);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_KERNELS_CPU_PANEL_PACK_H_
