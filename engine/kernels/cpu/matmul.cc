#include "engine/kernels/cpu/matmul.h"

#include "engine/kernels/cpu/panel_layout.h"
#include "engine/kernels/cpu/panel_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace moeserve {
namespace {

// Weight rows per tile: a tile is read from memory once and reused from cache for every
// token block (16 rows of a 4096-wide bf16 matrix = 128 KiB, within L2).
constexpr int64_t kRowBlock = 16;
constexpr int64_t kSegRows = 4;  // rows per segmented-dot call (activations reused 4×)

bool CpuHasAvx512() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

// AVX-512-BF16 with the BW, VL and VNNI subsets its kernels use (CPUID leaf 7: EBX for
// BW/VL, ECX bit 11 for VNNI, sub-leaf 1 EAX bit 5 for BF16), on top of the OS-enabled
// AVX-512F check. Every CPU with BF16 so far also has VNNI.
bool CpuHasAvx512Bf16() {
#if defined(__x86_64__)
  unsigned eax, ebx, ecx, edx;
  if (!CpuHasAvx512() || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool bw = (ebx & (1u << 30)) != 0, vl = (ebx & (1u << 31)) != 0;
  const bool vnni = (ecx & (1u << 11)) != 0;  // the set's int8 panel kernels use vpdpbusd
  if (!bw || !vl || !vnni || eax < 1 || !__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
  return (eax & (1u << 5)) != 0;
#else
  return false;
#endif
}

// AMX-TILE, AMX-BF16 and AMX-INT8 (CPUID leaf 7: EDX bits 24, 22 and 25; the set uses
// tdpbf16ps and tdpbusd) on top of AVX-512 BF16, and Linux's permission to use the tile data
// (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA, feature 18), which it grants per process;
// without it the first tile instruction faults.
bool CpuHasAmx() {
#if defined(__x86_64__) && defined(__linux__)
  unsigned eax, ebx, ecx, edx;
  if (!CpuHasAvx512Bf16() || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  if ((edx & (1u << 24)) == 0 || (edx & (1u << 22)) == 0 || (edx & (1u << 25)) == 0) return false;
  constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
#else
  return false;
#endif
}

bool CpuHasAvx2() {
#if defined(__x86_64__)
  // F16C through CPUID: clang's __builtin_cpu_supports does not know "f16c".
  unsigned eax, ebx, ecx, edx;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
  return f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// Rows [r0, r1) of m into L2 (no-op for an empty range).
void PrefetchRows(const WeightMatrix& m, int64_t r0, int64_t r1) {
  constexpr int64_t kLine = 64;
  const int64_t row_bytes = m.cols * DTypeSize(m.dtype);
  for (int64_t r = r0; r < r1; ++r) {
    const unsigned char* p = m.RowPtr(r);
    for (int64_t b = 0; b < row_bytes; b += kLine) __builtin_prefetch(p + b, 0, 2);
  }
}

const void* ByteOffset(const void* p, int64_t bytes) { return static_cast<const unsigned char*>(p) + bytes; }

// MOESERVE_CPU_KERNELS=<set name> pins a set (for tests and benchmarks); a set this CPU cannot
// run is refused with a message. Otherwise the best runnable set: the last of the list.
const cpu::KernelSet* Select() {
  const std::vector<const cpu::KernelSet*> sets = RunnableKernelSets();
  const char* want = std::getenv("MOESERVE_CPU_KERNELS");
  if (want != nullptr && *want != '\0') {
    for (const cpu::KernelSet* set : sets) {
      if (std::strcmp(set->name, want) == 0) return set;
    }
    std::fprintf(stderr, "warning: MOESERVE_CPU_KERNELS=%s is not available on this CPU; choosing automatically\n",
                 want);
  }
  return sets.back();
}

}  // namespace

cpu::WeightKind KindOf(DType d) {
  switch (d) {
    case DType::kF32: return cpu::kWeightF32;
    case DType::kBF16: return cpu::kWeightBf16;
    case DType::kF16: return cpu::kWeightF16;
    case DType::kI8: return cpu::kWeightI8;
  }
  return cpu::kWeightF32;
}

std::vector<const cpu::KernelSet*> RunnableKernelSets() {
  std::vector<const cpu::KernelSet*> sets = {cpu::PortableKernels()};
  if (CpuHasAvx2() && cpu::Avx2Kernels() != nullptr) sets.push_back(cpu::Avx2Kernels());
  if (CpuHasAvx512() && cpu::Avx512Kernels() != nullptr) sets.push_back(cpu::Avx512Kernels());
  if (CpuHasAvx512Bf16() && cpu::Avx512Bf16Kernels() != nullptr) sets.push_back(cpu::Avx512Bf16Kernels());
  if (cpu::Avx512AmxKernels() != nullptr && CpuHasAmx()) sets.push_back(cpu::Avx512AmxKernels());
  if (cpu::NeonKernels() != nullptr) sets.push_back(cpu::NeonKernels());
  return sets;
}

const cpu::KernelSet& ActiveKernels() {
  static const cpu::KernelSet* const set = Select();
  return *set;
}

namespace {

// The tile loop of MatMulRows over activations of type X (fp32, or bf16 bits for a set's
// bf16 × bf16 kernels): block(w, ld, n, xs, nt, out) and row(w, n, xs, nt, out) as in kernels.h.
// first_pass_block_tokens: the smallest token block that takes several rows per call on the
// tile's first pass too (below it, one row at a time; see the loop).
template <class X, class Block, class Row>
void TiledRows(const WeightMatrix& m, const int rows_per_call[], Block block, Row row, const X* x, int64_t x_stride,
               int64_t num_tokens, float* y, int64_t y_stride, int64_t r0, int64_t r1, bool accumulate,
               int first_pass_block_tokens) {
  const X* xs[cpu::kMaxTokens];
  float out[4 * cpu::kMaxTokens];
  // Tiles of kRowBlock weight rows × kMaxTokens tokens: a row block comes from memory once and
  // is reused from cache for every token block; a token block stays in L1 across the rows.
  for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
    const int64_t rb_end = std::min(r1, rb + kRowBlock);
    for (int64_t t0 = 0; t0 < num_tokens; t0 += cpu::kMaxTokens) {
      const int nt = static_cast<int>(std::min<int64_t>(cpu::kMaxTokens, num_tokens - t0));
      for (int t = 0; t < nt; ++t) xs[t] = x + (t0 + t) * x_stride;
      const int rows = rows_per_call[nt];
      for (int64_t r = rb; r < rb_end;) {
        int done;
        // The first token block streams the tile from memory, one row at a time, which the
        // hardware prefetchers follow best; later blocks find the tile in cache and take
        // several rows per call, so each activation load feeds several rows. The bf16 × bf16
        // kernels take several rows on the first pass too from two tokens on (they prefetch
        // each row stream themselves): a row's few accumulator chains left vdpbf16ps waiting
        // on its latency (LM-head shape, one thread, 16 tokens: 81 -> 92 GMAC/s; engine at
        // batch 16: +3-8 %). The fp32-activation kernels keep the one-row first pass (it was
        // not re-measured for them). Both paths give the same bits (kernels.h).
        if ((t0 > 0 || nt >= first_pass_block_tokens) && r + rows <= rb_end) {
          // The second pass also pulls the next tile into L2, so that its first pass (which
          // would otherwise wait on memory) overlaps with this pass's arithmetic.
          if (t0 == cpu::kMaxTokens) PrefetchRows(m, r + kRowBlock, std::min(r + kRowBlock + rows, r1));
          block(m.RowPtr(r), m.ld, m.cols, xs, nt, out);
          done = rows;
        } else {
          row(m.RowPtr(r), m.cols, xs, nt, out);
          done = 1;
        }
        for (int i = 0; i < done; ++i) {
          const float scale = m.scales == nullptr ? 1.0f : m.scales[r + i];  // × 1 is exact
          for (int t = 0; t < nt; ++t) {
            const float v = out[i * nt + t] * scale;
            float& dst = y[(t0 + t) * y_stride + r + i];
            dst = accumulate ? dst + v : v;
          }
        }
        r += done;
      }
    }
  }
}

// Per-thread scratch for activations rounded to bf16: grows to the largest call, then is
// reused (no allocation in the steady state of the step loop).
std::vector<uint16_t>& Bf16Scratch() {
  thread_local std::vector<uint16_t> scratch;
  return scratch;
}

}  // namespace

bool UsesPanels(DType weights) {
  const cpu::PanelKernels& k = ActiveKernels().panels;
  return (weights == DType::kBF16 && k.bf16 != nullptr) || (weights == DType::kI8 && k.i8 != nullptr);
}

bool ExpertDownInPanels(DType weights) {
  return UsesPanels(weights) && (weights == DType::kI8 || ActiveKernels().panels.bf16_expert_down);
}

bool UsesBf16Activations(DType weights) {
  return weights == DType::kBF16 && ActiveKernels().bf16x.block != nullptr;
}

void MatMulRows(const WeightMatrix& m, const float* x, int64_t x_stride, int64_t num_tokens, float* y, int64_t y_stride,
                int64_t r0, int64_t r1, bool accumulate) {
  if (m.panels) {
    thread_local PanelInput input;
    input.Prepare(m.dtype, x, x_stride, num_tokens, m.cols);
    return PanelMatMulRows(m, input, 0, num_tokens, y, y_stride, r0, r1, accumulate);
  }
  const cpu::KernelSet& k = ActiveKernels();
  const cpu::WeightKind kind = KindOf(m.dtype);
  if (UsesBf16Activations(m.dtype)) {
    std::vector<uint16_t>& xb = Bf16Scratch();
    if (static_cast<int64_t>(xb.size()) < num_tokens * m.cols) xb.resize(num_tokens * m.cols);
    for (int64_t t = 0; t < num_tokens; ++t) RoundToBf16(x + t * x_stride, m.cols, xb.data() + t * m.cols);
    TiledRows(m, k.rows_per_call, k.bf16x.block, k.bf16x.row, static_cast<const uint16_t*>(xb.data()), m.cols,
              num_tokens, y, y_stride, r0, r1, accumulate, /*first_pass_block_tokens=*/2);
    return;
  }
  TiledRows(m, k.rows_per_call, k.block[kind], k.row[kind], x, x_stride, num_tokens, y, y_stride, r0, r1, accumulate,
            /*first_pass_block_tokens=*/cpu::kMaxTokens + 1);
}

void RoundToBf16(const float* x, int64_t n, uint16_t* out) {
  const cpu::ToBf16Fn convert = ActiveKernels().bf16x.to_bf16;
  if (convert != nullptr) return convert(x, n, out);
  for (int64_t i = 0; i < n; ++i) out[i] = F32ToBf16(x[i]);
}

void SegmentedRowDotsBf16(const void* const* bases, const uint16_t* const* vecs, int segments, int64_t len,
                          int64_t row_stride, float* y, int64_t y_stride, int64_t r0, int64_t r1) {
  if (segments == 0) return;
  ActiveKernels().bf16x.segmented(bases, vecs, segments, len, row_stride, r0, r1, y, y_stride);
}

bool GroupedRowDotsBf16(const void* const* bases, const int32_t* entry_begin, int num_experts,
                        const int32_t* entry_tokens, const uint16_t* vecs, const int32_t* token_offsets,
                        int num_tokens, int64_t len, int64_t row_stride, float* y, int64_t y_token_stride, int64_t r0,
                        int64_t r1) {
  const cpu::Bf16GroupedDotFn grouped = ActiveKernels().bf16x.grouped;
  if (grouped == nullptr) return false;
  if (num_tokens == 0 || r0 >= r1) return true;
  // A tile's accumulators (64 bytes per token and row) within ~32 KiB, so in L1; at least 16
  // rows, at most 64 (longer runs of an expert's rows stream better).
  const int64_t tile_rows = std::clamp<int64_t>(32 * 1024 / 64 / num_tokens, 16, 64);
  thread_local std::vector<float> scratch;
  const size_t need = static_cast<size_t>(num_tokens * tile_rows * 16 + 16);
  if (scratch.size() < need) scratch.resize(need);
  const uintptr_t at = reinterpret_cast<uintptr_t>(scratch.data());
  float* acc = scratch.data() + ((64 - at % 64) % 64) / sizeof(float);
  return grouped(bases, entry_begin, num_experts, entry_tokens, vecs, token_offsets, num_tokens, len, row_stride, r0,
                 r1, y, y_token_stride, tile_rows, acc);
}

void SegmentedRowDots(DType dtype, const void* const* bases, const float* const* scales, const float* const* vecs,
                      int segments, int64_t len, int64_t row_stride, float* y, int64_t y_stride, int64_t r0,
                      int64_t r1) {
  if (segments == 0) return;
  const cpu::KernelSet& k = ActiveKernels();
  const cpu::WeightKind kind = KindOf(dtype);
  const int64_t esize = DTypeSize(dtype);
  constexpr int kMaxStackSegments = 256;
  if (UsesBf16Activations(dtype) && scales == nullptr) {  // the vectors rounded to bf16 once
    const uint16_t* stack_vecs[kMaxStackSegments];
    std::vector<const uint16_t*> heap_vecs;
    const uint16_t** vecs16 = stack_vecs;
    if (segments > kMaxStackSegments) {
      heap_vecs.resize(segments);
      vecs16 = heap_vecs.data();
    }
    std::vector<uint16_t>& vb = Bf16Scratch();
    if (static_cast<int64_t>(vb.size()) < segments * len) vb.resize(segments * len);
    for (int s = 0; s < segments; ++s) {
      RoundToBf16(vecs[s], len, vb.data() + s * len);
      vecs16[s] = vb.data() + s * len;
    }
    return SegmentedRowDotsBf16(bases, vecs16, segments, len, row_stride, y, y_stride, r0, r1);
  }
  const void* stack_rows[kMaxStackSegments];
  const float* stack_scales[kMaxStackSegments];
  std::vector<const void*> heap_rows;
  std::vector<const float*> heap_scales;
  const void** rows = stack_rows;
  const float** row_scales = stack_scales;
  if (segments > kMaxStackSegments) {
    heap_rows.resize(segments);
    heap_scales.resize(segments);
    rows = heap_rows.data();
    row_scales = heap_scales.data();
  }
  float out[4];
  for (int64_t r = r0; r < r1; r += kSegRows) {
    const int n = static_cast<int>(std::min<int64_t>(kSegRows, r1 - r));
    for (int s = 0; s < segments; ++s) {
      rows[s] = ByteOffset(bases[s], r * row_stride * esize);
      if (scales != nullptr) row_scales[s] = scales[s] + r;
    }
    k.segmented[kind](rows, vecs, scales == nullptr ? nullptr : row_scales, segments, len, row_stride, n, out);
    for (int i = 0; i < n; ++i) y[(r + i) * y_stride] += out[i];
  }
}

namespace {

// Matmul jobs over the same tokens with their panel inputs prepared once (jobs with the same
// input share one); RunRows then runs row ranges of them on any thread.
class PreparedMatMul {
 public:
  static constexpr size_t kMaxJobs = 8;
  void Prepare(std::span<const MatMulJob> jobs, int64_t num_tokens, ThreadPool& pool);
  // Rows [r0, r1) of job i, for every token.
  void RunRows(size_t i, int64_t r0, int64_t r1) const;

 private:
  std::span<const MatMulJob> jobs_;
  int64_t num_tokens_ = 0;
  PanelInput inputs_[kMaxJobs];
  const PanelInput* prepared_[kMaxJobs] = {};
};

void PreparedMatMul::Prepare(std::span<const MatMulJob> jobs, int64_t num_tokens, ThreadPool& pool) {
  jobs_ = jobs;
  num_tokens_ = num_tokens;
  for (size_t i = 0; i < jobs.size() && i < kMaxJobs; ++i) {
    const MatMulJob& j = jobs[i];
    prepared_[i] = nullptr;
    if (!j.w->panels) continue;
    for (size_t e = 0; e < i && prepared_[i] == nullptr; ++e) {
      const MatMulJob& o = jobs[e];
      if (o.w->panels && o.x == j.x && o.x_stride == j.x_stride && o.w->dtype == j.w->dtype && o.w->cols == j.w->cols) {
        prepared_[i] = prepared_[e];
      }
    }
    if (prepared_[i] == nullptr) {
      inputs_[i].Prepare(j.w->dtype, j.x, j.x_stride, num_tokens, j.w->cols, &pool);
      prepared_[i] = &inputs_[i];
    }
  }
}

void PreparedMatMul::RunRows(size_t i, int64_t r0, int64_t r1) const {
  const MatMulJob& j = jobs_[i];
  if (j.w->panels && i < kMaxJobs) {
    PanelMatMulRows(*j.w, *prepared_[i], 0, num_tokens_, j.y, j.y_stride, r0, r1, j.accumulate);
  } else {
    MatMulRows(*j.w, j.x, j.x_stride, num_tokens_, j.y, j.y_stride, r0, r1, j.accumulate);
  }
}

}  // namespace

void ParallelMatMul(ThreadPool& pool, std::span<const MatMulJob> jobs, int64_t num_tokens) {
  // Panel jobs' activations are prepared once here, shared by jobs with the same input, rather
  // than by every range of every thread.
  thread_local PreparedMatMul per_caller;
  PreparedMatMul& prepared = per_caller;  // the caller's, also on the workers (a thread_local named
                                          // in the lambda would be each worker's own)
  prepared.Prepare(jobs, num_tokens, pool);
  // Work is handed out in units of the jobs laid end to end: whole panels (16 rows) for one
  // token, whose rows stream from memory whatever the tile; whole tiles of kMaxPanels panels for
  // batches, where a range ending inside a tile would leave a thread 1–3-panel tiles, which load
  // a weight group per multiply instead of per kMaxPanels (pp512: a fifth of the tile time).
  const int64_t unit = num_tokens > 1 ? cpu::kMaxPanels : 1;
  const auto units_of = [&](const MatMulJob& j) { return (cpu::NumPanels(j.w->rows) + unit - 1) / unit; };
  int64_t total = 0;
  for (const MatMulJob& j : jobs) total += units_of(j);
  pool.ParallelFor(total, [&](int64_t begin, int64_t end) {
    int64_t base = 0;
    for (size_t i = 0; i < jobs.size(); ++i) {
      const MatMulJob& j = jobs[i];
      const int64_t units = units_of(j);
      const int64_t lo = std::max(begin, base), hi = std::min(end, base + units);
      if (lo < hi) {
        prepared.RunRows(i, (lo - base) * unit * cpu::kPanelRows,
                         std::min(j.w->rows, (hi - base) * unit * cpu::kPanelRows));
      }
      base += units;
    }
  });
}

const char* MatMulKernelName() { return ActiveKernels().name; }

}  // namespace moeserve
