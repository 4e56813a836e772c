// AVX-512F kernels (16 lanes). This file is compiled with -mavx512f -mfma -mf16c and runs only
// after the CPU check in matmul.cc.
#include "engine/kernels/cpu/kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__)
#include "engine/kernels/cpu/isa_avx512.h"

namespace moeserve::cpu {
namespace {

// constexpr: a dynamic initializer here would be compiled with this file's instruction set and
// run at startup on every CPU.
constexpr KernelSet kAvx512 = MakeKernelSet<Avx512, Avx512Rows>("avx512");

}  // namespace

const KernelSet* Avx512Kernels() { return &kAvx512; }

}  // namespace moeserve::cpu
#else
namespace moeserve::cpu {
const KernelSet* Avx512Kernels() { return nullptr; }
}  // namespace moeserve::cpu
#endif
