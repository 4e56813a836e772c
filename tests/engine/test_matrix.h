// Random weight matrices for the kernel tests, in one dtype, with the fp32 values they
// represent after rounding.
#ifndef MOESERVE_TESTS_ENGINE_TEST_MATRIX_H_
#define MOESERVE_TESTS_ENGINE_TEST_MATRIX_H_

#include <cstring>
#include <random>
#include <vector>

#include "engine/dtype.h"
#include "engine/kernels/cpu/weight_matrix.h"

namespace moeserve {

// A weight matrix in one dtype, with the fp32 values it represents (after rounding).
struct TestMatrix {
  DType dtype;
  int64_t rows, cols;
  std::vector<unsigned char> bytes;
  std::vector<float> scales;  // int8
  std::vector<float> exact;   // the represented values, [rows, cols]

  WeightMatrix View() const {
    return WeightMatrix{dtype, rows, cols, cols, bytes.data(), scales.empty() ? nullptr : scales.data()};
  }
};

inline TestMatrix MakeMatrix(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  TestMatrix m{dtype, rows, cols, std::vector<unsigned char>(rows * cols * DTypeSize(dtype)), {}, {}};
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = normal(rng);
    unsigned char* dst = m.bytes.data() + r * cols * DTypeSize(dtype);
    if (dtype == DType::kI8) {
      m.scales.push_back(QuantizeRowInt8(row.data(), cols, reinterpret_cast<int8_t*>(dst)));
    } else {
      for (int64_t c = 0; c < cols; ++c) {
        if (dtype == DType::kF32) std::memcpy(dst + 4 * c, &row[c], 4);
        const uint16_t h = dtype == DType::kBF16 ? F32ToBf16(row[c]) : F32ToF16(row[c]);
        if (dtype != DType::kF32) std::memcpy(dst + 2 * c, &h, 2);
      }
    }
    std::vector<float> back(cols);
    m.View().RowToF32(r, back.data());
    m.exact.insert(m.exact.end(), back.begin(), back.end());
  }
  return m;
}

}  // namespace moeserve

#endif  // MOESERVE_TESTS_ENGINE_TEST_MATRIX_H_
