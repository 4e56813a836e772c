// The panel kernels of the AVX-512 (BF16 + VNNI) kernel set, defined in
// kernels_avx512_panels.cc, which is compiled for that instruction set; referenced only from
// kernels_avx512bf16.cc's table (see kernels.h, PanelKernels, for what they compute).
#ifndef MOESERVE_ENGINE_KERNELS_CPU_PANEL_KERNELS_H_
#define MOESERVE_ENGINE_KERNELS_CPU_PANEL_KERNELS_H_

#include <cstdint>

#include "engine/kernels/cpu/kernels.h"

namespace moeserve::cpu {

void Avx512Bf16Panels(const void* panels, int64_t panel_bytes, int np, int64_t groups, const uint16_t* x,
                      int64_t x_stride, int nt, float* out);
void Avx512VnniPanels(const void* panels, int64_t panel_bytes, int np, int64_t groups, const uint8_t* x,
                      int64_t x_stride, int nt, const I8PanelScales& scales, float* out);
float Avx512QuantizeU8(const float* x, int64_t n, uint8_t* out);
// In kernels_amx_panels.cc (compiled for AMX-TILE, -BF16, -INT8); nt up to kMaxAmxPanelTokens.
void AmxBf16Panels(const void* panels, int64_t panel_bytes, int np, int64_t groups, const uint16_t* x,
                   int64_t x_stride, int nt, float* out);
void AmxI8Panels(const void* panels, int64_t panel_bytes, int np, int64_t groups, const uint8_t* x, int64_t x_stride,
                 int nt, const I8PanelScales& scales, float* out);

}  // namespace moeserve::cpu

#endif  // MOESERVE_ENGINE_KERNELS_CPU_PANEL_KERNELS_H_
