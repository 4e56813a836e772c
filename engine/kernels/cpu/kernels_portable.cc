// Portable kernels: plain loops over 8-float "vectors" that any compiler can vectorise for
// the baseline instruction set. The reference for the SIMD sets in the kernel tests.
#include "engine/kernels/cpu/kernel_impl.h"

namespace moeserve::cpu {
namespace {

struct Portable {
  static constexpr int kLanes = 8;
  struct V {
    float f[kLanes];
  };
  static V Zero() { return V{}; }
  static V Broadcast(float s) {
    V r;
    for (int i = 0; i < kLanes; ++i) r.f[i] = s;
    return r;
  }
  template <class W>
  static V LoadW(const W* w) {
    V r;
    for (int i = 0; i < kLanes; ++i) r.f[i] = ScalarF32(w + i);
    return r;
  }
  static V LoadX(const float* x) { return LoadW(x); }
  static void KeepInRegister(V&) {}
  static void Store(float* p, V v) {
    for (int i = 0; i < kLanes; ++i) p[i] = v.f[i];
  }
  static V Fma(V a, V b, V acc) {
    for (int i = 0; i < kLanes; ++i) acc.f[i] += a.f[i] * b.f[i];
    return acc;
  }
  static float Sum(V v) {
    float s = 0.0f;
    for (int i = 0; i < kLanes; ++i) s += v.f[i];
    return s;
  }
};

template <int NT> struct PortableRows { static constexpr int value = NT <= 2 ? 4 : 2; };

constexpr KernelSet kPortable = MakeKernelSet<Portable, PortableRows>("portable");

}  // namespace

const KernelSet* PortableKernels() { return &kPortable; }

}  // namespace moeserve::cpu
