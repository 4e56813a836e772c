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
  // A group (a bf16 pair or an int8 quad) is 4 bytes in both layouts: row r's group k goes
  // kPanelGroupBytes after its group k - 1 (panel_layout.h), whole groups copied at once.
  constexpr int64_t kGroupBytes = cpu::kPanelGroupBytes / cpu::kPanelRows;
  static_assert(kGroupBytes == 4);
  const int64_t full_groups = m.cols / group, tail_bytes = (m.cols % group) * esize;
  for (int64_t r = 0; r < m.rows; ++r) {
    const unsigned char* row = m.RowPtr(r);
    unsigned char* dst = out + cpu::PanelOffset(stride, group, r, 0) * esize;
    for (int64_t k = 0; k < full_groups; ++k) {
      std::memcpy(dst + k * cpu::kPanelGroupBytes, row + k * kGroupBytes, kGroupBytes);
    }
    if (tail_bytes > 0) {
      std::memcpy(dst + full_groups * cpu::kPanelGroupBytes, row + full_groups * kGroupBytes, tail_bytes);
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
