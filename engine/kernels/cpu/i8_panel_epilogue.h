// The int8 panel kernels' last step (kernels.h, PanelKernels), shared by the vpdpbusd kernel
// (kernels_avx512_panels.cc) and the AMX one (kernels_amx_panels.cc) so that their bits agree:
//   out = (float)(sum − 128 · row_sum) · row_scale · x_scale, 16 rows of a panel at a time.
// Included only by files compiled for AVX-512.
#ifndef MOESERVE_ENGINE_KERNELS_CPU_I8_PANEL_EPILOGUE_H_
#define MOESERVE_ENGINE_KERNELS_CPU_I8_PANEL_EPILOGUE_H_

#include <immintrin.h>

#include "engine/kernels/cpu/kernels.h"

namespace moeserve::cpu {

// Panel p's row constants: 128 · row_sums (the activations' + 128 offset met every weight) and
// the row scales.
struct I8PanelRows {
  __m512i offset_sums;
  __m512 scales;
};

inline I8PanelRows LoadI8PanelRows(const I8PanelScales& sc, int p) {
  return {_mm512_mullo_epi32(_mm512_loadu_si512(sc.row_sums + p * kPanelRows), _mm512_set1_epi32(128)),
          _mm512_loadu_ps(sc.row_scales + p * kPanelRows)};
}

// One token's exact sums over a panel's 16 rows, scaled, to out[0..16).
inline void StoreI8PanelSums(__m512i sums, const I8PanelRows& rows, float x_scale, float* out) {
  const __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(sums, rows.offset_sums));
  _mm512_storeu_ps(out, _mm512_mul_ps(_mm512_mul_ps(v, rows.scales), _mm512_set1_ps(x_scale)));
}

}  // namespace moeserve::cpu

#endif  // MOESERVE_ENGINE_KERNELS_CPU_I8_PANEL_EPILOGUE_H_
