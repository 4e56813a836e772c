// NEON kernels for aarch64 (8 lanes as two float32x4; NEON and fp16 conversion are part of
// the armv8 baseline, so no runtime check is needed).
#include "engine/kernels/cpu/kernels.h"

#if defined(__aarch64__)
#include <arm_neon.h>

#include "engine/kernels/cpu/kernel_impl.h"

namespace moeserve::cpu {
namespace {

struct Neon {
  static constexpr int kLanes = 8;
  struct V {
    float32x4_t lo, hi;
  };
  static V Zero() { return V{vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)}; }
  static V Broadcast(float s) { return V{vdupq_n_f32(s), vdupq_n_f32(s)}; }
  static V LoadX(const float* x) { return V{vld1q_f32(x), vld1q_f32(x + 4)}; }
  static V LoadW(const float* w) { return LoadX(w); }
  static V LoadW(const Bf16* w) {
    const uint16x8_t raw = vld1q_u16(reinterpret_cast<const uint16_t*>(w));
    return V{vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(raw), 16)),
             vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(raw), 16))};
  }
  static V LoadW(const F16* w) {
    const float16x8_t raw = vreinterpretq_f16_u16(vld1q_u16(reinterpret_cast<const uint16_t*>(w)));
    return V{vcvt_f32_f16(vget_low_f16(raw)), vcvt_f32_f16(vget_high_f16(raw))};
  }
  static V LoadW(const int8_t* w) {
    const int16x8_t wide = vmovl_s8(vld1_s8(w));
    return V{vcvtq_f32_s32(vmovl_s16(vget_low_s16(wide))), vcvtq_f32_s32(vmovl_s16(vget_high_s16(wide)))};
  }
  static void KeepInRegister(V&) {}
  static void Store(float* p, V v) {
    vst1q_f32(p, v.lo);
    vst1q_f32(p + 4, v.hi);
  }
  static V Fma(V a, V b, V acc) { return V{vfmaq_f32(acc.lo, a.lo, b.lo), vfmaq_f32(acc.hi, a.hi, b.hi)}; }
  static float Sum(V v) { return vaddvq_f32(vaddq_f32(v.lo, v.hi)); }
};

// 32 q registers; each V takes two.
template <int NT> struct NeonRows { static constexpr int value = NT <= 2 ? 4 : 2; };

// constexpr: a dynamic initializer here would be compiled with this file's instruction set and
// run at startup on every CPU.
constexpr KernelSet kNeon = MakeKernelSet<Neon, NeonRows>("neon");

}  // namespace

const KernelSet* NeonKernels() { return &kNeon; }

}  // namespace moeserve::cpu
#else
namespace moeserve::cpu {
const KernelSet* NeonKernels() { return nullptr; }
}  // namespace moeserve::cpu
#endif
