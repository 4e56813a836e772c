#include "engine/kernels/cpu/panel_pack.h"

#include <cstring>

namespace moeserve {

WeightMatrix PackPanels(const WeightMatrix& m, PanelStorage& storage) {
  const int64_t esize = DTypeSize(m.dtype), group = cpu::PanelGroup(m.dtype);
  const int64_t stride = cpu::PanelStride(m.dtype, m.cols);
  const int64_t bytes = cpu::NumPanels(m.rows) * stride * esize;
  storage.bytes.reset(new unsigned char[bytes + 64]);
  const uintptr_t raw = reinterpret_cast<uintptr_t>(storage.bytes.get());
  unsigned char* out = storage.bytes.get() + (64 - raw % 64) % 64;
  std::memset(out, 0, bytes);  // padding rows and columns are zero
  for (int64_t r = 0; r < m.rows; ++r) {
    const unsigned char* row = m.RowPtr(r);
    for (int64_t c = 0; c < m.cols; ++c) {
      std::memcpy(out + cpu::PanelOffset(stride, group, r, c) * esize, row + c * esize, esize);
    }
  }
  WeightMatrix p = m;
  p.data = out;
  p.ld = stride;
  p.panels = true;
  if (m.dtype == DType::kI8) {
    const int64_t padded = cpu::NumPanels(m.rows) * cpu::kPanelRows;
    storage.row_sums.reset(new int32_t[padded]());
    storage.scales.reset(new float[padded]());
    std::memcpy(storage.scales.get(), m.scales, m.rows * sizeof(float));
    p.scales = storage.scales.get();
    for (int64_t r = 0; r < m.rows; ++r) {
      const int8_t* q = reinterpret_cast<const int8_t*>(m.RowPtr(r));
      int32_t s = 0;
      for (int64_t c = 0; c < m.cols; ++c) s += q[c];
      storage.row_sums[r] = s;
    }
    p.row_sums = storage.row_sums.get();
  }
  return p;
}

}  // namespace moeserve
