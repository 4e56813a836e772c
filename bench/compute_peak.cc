// The machine's bf16 multiply-add peak, the denominator of cpu_suite's prefill figure
// (--bf16-peak-gmacs): independent vdpbf16ps chains (AVX-512 BF16), and independent
// tdpbf16ps tiles (AMX-BF16) where the CPU has them, on every thread at once, median of runs.
//   build/bench/compute_peak [--threads 2] [--runs 5]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"

#include "engine/kernels/cpu/kernels.h"
#include "engine/kernels/cpu/matmul.h"

#if defined(__x86_64__) && defined(__AVX512BF16__) && (defined(__AMX_BF16__) || defined(__AMXBF16__))
#include <immintrin.h>
#define MOESERVE_PEAK_X86 1
#endif

ABSL_FLAG(int, threads, 2, "threads, each running the same chains at once");
ABSL_FLAG(int, runs, 5, "runs (the median is reported)");

namespace {

#if MOESERVE_PEAK_X86
// Whether the engine would run the kernel set of that name here: its CPU checks (and, for
// AMX, Linux's tile-data permission, which the check requests).
bool SetRunnable(const char* name) {
  for (const moeserve::cpu::KernelSet* set : moeserve::RunnableKernelSets()) {
    if (std::string_view(set->name) == name) return true;
  }
  return false;
}

// The instruction itself in assembly, so the compiler neither folds the constant chains nor
// keeps the accumulators in memory.
inline void Dpbf16(__m512& acc, __m512bh x, __m512bh y) { __asm__("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(x), "v"(y)); }

// 16 independent accumulators (more than latency × throughput needs), each its own variable
// so that they stay in registers; 32 MACs per instruction.
double Vdpbf16psMacs(int64_t iterations) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  __m512 a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
  const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_set1_epi32(0x3f003f00);
  for (int64_t i = 0; i < iterations; ++i) {
    Dpbf16(a0, x, y), Dpbf16(a1, x, y), Dpbf16(a2, x, y), Dpbf16(a3, x, y);
    Dpbf16(a4, x, y), Dpbf16(a5, x, y), Dpbf16(a6, x, y), Dpbf16(a7, x, y);
    Dpbf16(a8, x, y), Dpbf16(a9, x, y), Dpbf16(a10, x, y), Dpbf16(a11, x, y);
    Dpbf16(a12, x, y), Dpbf16(a13, x, y), Dpbf16(a14, x, y), Dpbf16(a15, x, y);
  }
  const __m512 sum = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11)) +
                     ((a12 + a13) + (a14 + a15));
  const float sink = _mm512_reduce_add_ps(sum);
  __asm__ volatile("" : : "x"(sink));
  return 16.0 * 32.0 * static_cast<double>(iterations);
}

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Four independent 16 × 16 fp32 accumulator tiles, each += A (16 × 32 bf16) · B (32 × 16):
// 8192 MACs per tdpbf16ps.
double TdpbMacs(int64_t iterations) {
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = 64;
    c.rows[t] = 16;
  }
  _tile_loadconfig(&c);
  alignas(64) static thread_local uint16_t data[16 * 32];
  _tile_loadd(4, data, 64);
  _tile_loadd(5, data, 64);
  _tile_loadd(6, data, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t i = 0; i < iterations; ++i) {
    _tile_dpbf16ps(0, 4, 5);
    _tile_dpbf16ps(1, 4, 6);
    _tile_dpbf16ps(2, 6, 5);
    _tile_dpbf16ps(3, 6, 4);
  }
  alignas(64) static thread_local float out[16 * 16];
  _tile_stored(0, out, 64);
  _tile_release();
  return 4.0 * 8192.0 * static_cast<double>(iterations);
}
#endif

// All threads run `kernel` at once; GMAC/s summed over them, median of the runs.
template <class Kernel>
double Peak(Kernel kernel, int64_t iterations, int threads, int runs) {
  std::vector<double> rates;
  for (int r = 0; r < runs; ++r) {
    std::vector<double> macs(threads);
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { macs[t] = kernel(iterations); });
    for (auto& th : pool) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    double total = 0;
    for (double m : macs) total += m;
    rates.push_back(total / s / 1e9);
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int threads = absl::GetFlag(FLAGS_threads), runs = absl::GetFlag(FLAGS_runs);
#if MOESERVE_PEAK_X86
  if (!SetRunnable("avx512bf16")) {
    std::printf("no AVX-512 BF16 on this CPU\n");
    return 0;
  }
  std::printf("threads=%d runs=%d\n", threads, runs);
  std::printf("vdpbf16ps (AVX-512 BF16): %.1f GMAC/s\n", Peak(Vdpbf16psMacs, 20'000'000, threads, runs));
  if (SetRunnable("avx512amx")) {
    std::printf("tdpbf16ps (AMX-BF16): %.1f GMAC/s\n", Peak(TdpbMacs, 2'000'000, threads, runs));
  } else {
    std::printf("no AMX-BF16 on this CPU (or no tile-data permission)\n");
  }
#else
  std::printf("compute_peak measures x86 bf16 instructions only\n");
#endif
  return 0;
}
