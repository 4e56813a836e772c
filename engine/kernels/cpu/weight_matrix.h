// A view of a weight matrix [rows, cols] in f32, bf16, f16 or int8 (with one fp32 scale per
// row: W[r, c] = scales[r] · q[r, c]), in one of two layouts:
//  - row-major, with a leading dimension `ld` (elements between row starts);
//  - panels (panel_layout.h): bf16 or int8 rows packed kPanelRows at a time for the panel
//    kernels, `ld` then being the elements from one panel to the next.
// Views never own memory; the model's weight store does.
#ifndef MOESERVE_ENGINE_BACKEND_CPU_WEIGHT_MATRIX_H_
#define MOESERVE_ENGINE_BACKEND_CPU_WEIGHT_MATRIX_H_

#include <cstdint>

#include "engine/dtype.h"
#include "engine/kernels/cpu/panel_layout.h"

namespace moeserve {

struct WeightMatrix {
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t ld = 0;  // row-major: elements from one row start to the next; panels: one panel to the next
  const void* data = nullptr;
  const float* scales = nullptr;  // [rows], int8 only
  bool panels = false;            // the panel layout (panel_layout.h)
  const int32_t* row_sums = nullptr;  // [rows], int8 panels only: Σ_c q[r, c]

  bool empty() const { return data == nullptr; }
  // Row-major views only.
  const unsigned char* RowPtr(int64_t r) const {
    return static_cast<const unsigned char*>(data) + r * ld * DTypeSize(dtype);
  }
  // Rows [r0, r0 + n); for panels r0 must be a multiple of kPanelRows.
  WeightMatrix RowBlock(int64_t r0, int64_t n) const {
    WeightMatrix b = *this;
    b.rows = n;
    b.data = panels ? static_cast<const unsigned char*>(data) + (r0 / cpu::kPanelRows) * ld * DTypeSize(dtype)
                    : RowPtr(r0);
    if (scales != nullptr) b.scales = scales + r0;
    if (row_sums != nullptr) b.row_sums = row_sums + r0;
    return b;
  }
  // Columns [c0, c0 + n) of every row (a strided view; row-major only).
  WeightMatrix ColBlock(int64_t c0, int64_t n) const {
    return WeightMatrix{dtype, rows, n, ld, static_cast<const unsigned char*>(data) + c0 * DTypeSize(dtype),
                        scales};
  }
  // Row r in fp32 (dequantised for int8), in either layout.
  void RowToF32(int64_t r, float* out) const {
    if (panels) {
      cpu::PanelRowToF32(dtype, data, ld, cols, r, out);
    } else {
      ConvertToF32(dtype, RowPtr(r), cols, out);
    }
    if (scales != nullptr) {
      for (int64_t c = 0; c < cols; ++c) out[c] *= scales[r];
    }
  }
  // Bytes a full pass over the view reads (panel padding aside).
  int64_t Bytes() const { return rows * cols * DTypeSize(dtype); }
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_BACKEND_CPU_WEIGHT_MATRIX_H_
