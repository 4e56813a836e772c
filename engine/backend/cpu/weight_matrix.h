// Row-major view of a weight matrix [rows, cols] with a leading dimension (elements between
// row starts), in f32 or bf16. Views never own memory; the model's weight store does.
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

  bool empty() const { return data == nullptr; }
  const unsigned char* RowPtr(int64_t r) const {
    return static_cast<const unsigned char*>(data) + r * ld * DTypeSize(dtype);
  }
  // Rows [r0, r0 + n).
  WeightMatrix RowBlock(int64_t r0, int64_t n) const {
    return WeightMatrix{dtype, n, cols, ld, RowPtr(r0)};
  }
  // Columns [c0, c0 + n) of every row (a strided view).
  WeightMatrix ColBlock(int64_t c0, int64_t n) const {
    return WeightMatrix{dtype, rows, n, ld,
                        static_cast<const unsigned char*>(data) + c0 * DTypeSize(dtype)};
  }
  // Bytes a full pass over the view reads.
  int64_t Bytes() const { return rows * cols * DTypeSize(dtype); }
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_BACKEND_CPU_WEIGHT_MATRIX_H_
