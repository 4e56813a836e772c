// Element types of checkpoint tensors and of compute weights, and conversions between them.
#ifndef MOESERVE_ENGINE_DTYPE_H_
#define MOESERVE_ENGINE_DTYPE_H_

#include <cstdint>
#include <cstring>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace moeserve {

// kI8 exists only as a compute dtype: int8 weights with one fp32 scale per row (weight-only
// quantisation); checkpoints never hold it.
enum class DType { kF32, kBF16, kF16, kI8 };

// Bytes per element.
inline int64_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kI8: return 1;
    default: return 2;
  }
}

// "F32", "BF16", "F16", "I8" (safetensors spelling).
absl::string_view DTypeName(DType t);

// Parses the safetensors spelling; error names the offending string.
absl::StatusOr<DType> ParseSafetensorsDType(absl::string_view name);

// Parses "f32" / "bf16" / "f16" / "int8" (the --dtype / config spelling of compute dtypes).
absl::StatusOr<DType> ParseComputeDType(absl::string_view name);
// The canonical spelling ParseComputeDType takes: "f32", "bf16", "f16" or "int8".
absl::string_view ComputeDTypeName(DType t);

inline float Bf16ToF32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Round-to-nearest-even; NaN stays NaN.
inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float F16ToF32(uint16_t v);
// Round-to-nearest-even; overflow saturates to infinity, NaN stays NaN.
uint16_t F32ToF16(float f);

// Per-row symmetric int8 quantisation: scale = max|row| / 127, q = round(row / scale).
// Returns the scale (0 for an all-zero row, whose q are all 0).
float QuantizeRowInt8(const float* row, int64_t n, int8_t* q);

// Converts n elements of `src` (type `from`, any alignment) to float32. kI8 gives the raw
// integers; the caller applies the row's scale.
void ConvertToF32(DType from, const void* src, int64_t n, float* dst);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_DTYPE_H_
