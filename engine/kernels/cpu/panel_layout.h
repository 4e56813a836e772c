// The panel layout of bf16 and int8 weights for the panel kernels (kernels.h, PanelKernels):
// rows in panels of kPanelRows; within a panel, columns in groups of PanelGroup(dtype)
// elements (2 bf16: one vdpbf16ps pair; 4 int8: one vpdpbusd quad), and for each group the 16
// rows' elements side by side, so that one 64-byte load holds one group of every row of the
// panel:
//   panel p, element (r, c) of row p·16 + r at ((c / g) · 16 + r) · g + c % g.
// A panel is PanelGroups(cols, g) · 64 bytes; rows past the matrix and columns past `cols`
// are zero. The activations are broadcast a group at a time and each lane accumulates one
// row, so nothing is summed across lanes.
#ifndef MOESERVE_ENGINE_KERNELS_CPU_PANEL_LAYOUT_H_
#define MOESERVE_ENGINE_KERNELS_CPU_PANEL_LAYOUT_H_

#include <cstdint>

#include "engine/dtype.h"
#include "engine/kernels/cpu/kernels.h"

namespace moeserve::cpu {

// Elements per group: 2 for bf16, 4 for int8, 0 for dtypes without panels.
inline int64_t PanelGroup(DType d) { return d == DType::kBF16 ? 2 : d == DType::kI8 ? 4 : 0; }
inline int64_t PanelGroups(int64_t cols, int64_t group) { return (cols + group - 1) / group; }
inline int64_t NumPanels(int64_t rows) { return (rows + kPanelRows - 1) / kPanelRows; }
// Elements from one panel to the next.
inline int64_t PanelStride(DType d, int64_t cols) {
  return PanelGroups(cols, PanelGroup(d)) * kPanelGroupBytes / DTypeSize(d);
}
// Offset of element (r, c) (r < rows) from the first panel, in elements.
inline int64_t PanelOffset(int64_t panel_stride, int64_t group, int64_t r, int64_t c) {
  return (r / kPanelRows) * panel_stride + ((c / group) * kPanelRows + r % kPanelRows) * group + c % group;
}

// Row r of a bf16 or int8 panel matrix in fp32 (int8: the raw integers, unscaled).
inline void PanelRowToF32(DType d, const void* panels, int64_t panel_stride, int64_t cols, int64_t r, float* out) {
  const int64_t g = PanelGroup(d);
  for (int64_t c = 0; c < cols; ++c) {
    const int64_t at = PanelOffset(panel_stride, g, r, c);
    out[c] = d == DType::kBF16 ? Bf16ToF32(static_cast<const uint16_t*>(panels)[at])
                               : static_cast<float>(static_cast<const int8_t*>(panels)[at]);
  }
}

}  // namespace moeserve::cpu

#endif  // MOESERVE_ENGINE_KERNELS_CPU_PANEL_LAYOUT_H_
