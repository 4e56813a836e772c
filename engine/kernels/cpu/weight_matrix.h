// Row-major view of a weight matrix [rows, cols] with a leading dimension (elements between
// row starts), in f32, bf16, f16 or int8 (with one fp32 scale per row: W[r, c] = scales[r] ·
// q[r, c]). Views never own memory; the model's weight store does.
#ifndef MOESERVE_ENGINE_BACKEND_CPU_WEIGHT_MATRIX_H_
#define MOESERVE_ENGINE_BACKEND_CPU_WEIGHT_MATRIX_H_

#include <cstdint>

#include "engine/dtype.h"

namespace moeserve {

struct WeightMatrix {
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t ld = 0;  // elements from one row start to the next
  const void* data = nullptr;
  const float* scales = nullptr;  // [rows], int8 only

  bool empty() const { return data == nullptr; }
  const unsigned char* RowPtr(int64_t r) const {
    return static_cast<const unsigned char*>(data) + r * ld * DTypeSize(dtype);
  }
  // Rows [r0, r0 + n).
  WeightMatrix RowBlock(int64_t r0, int64_t n) const {
    return WeightMatrix{dtype, n, cols, ld, RowPtr(r0), scales == nullptr ? nullptr : scales + r0};
  }
  // Columns [c0, c0 + n) of every row (a strided view).
  WeightMatrix ColBlock(int64_t c0, int64_t n) const {
    return WeightMatrix{dtype, rows, n, ld, static_cast<const unsigned char*>(data) + c0 * DTypeSize(dtype),
                        scales};
  }
  // Row r in fp32 (dequantised for int8).
  void RowToF32(int64_t r, float* out) const {
    ConvertToF32(dtype, RowPtr(r), cols, out);
    if (scales != nullptr) {
      for (int64_t c = 0; c < cols; ++c) out[c] *= scales[r];
    }
  }
  // Bytes a full pass over the view reads.
  int64_t Bytes() const { return rows * cols * DTypeSize(dtype); }
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_BACKEND_CPU_WEIGHT_MATRIX_H_
