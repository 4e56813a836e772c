// The panel kernels on AMX (kernels.h, PanelKernels): the panel layout is already an AMX B
// tile, 16 groups of a panel being 16 rows of 64 bytes (each a bf16 pair, or an int8 quad, of
// all 16 weight rows), and the tokens' activations are the A tile (a row per token, 64 bytes of
// it per step). int8 sums are exact integers as with vpdpbusd, so its bits are VNNI's.
// One tdpbf16ps per panel and step multiplies up to 16 tokens by 16 rows over 32 elements, where
// vdpbf16ps does one token; its fp32 sums round differently from vdpbf16ps's, so a kernel set
// takes AMX for every bf16 panel call or for none (a token's bits then still do not depend on
// the batch: each element of C accumulates its own row of A against its own column of B, step
// by step in ascending order, whatever else the tile holds). A call of up to 64 tokens runs
// them as tiles of 16 (and one smaller), the steps in chunks that every tile meets in turn, so
// a chunk of weights comes from L2 once per call rather than once per tile; the partial sums
// wait in memory, exactly.
//
// AMX state is per thread: each thread loads the tile configuration for the shape it needs
// (tokens in the tile, groups in the last step) and keeps it while the shape repeats. Entered
// only after matmul.cc's check, which also asks Linux for the tile-data permission.
#include "engine/kernels/cpu/panel_kernels.h"

#if defined(__x86_64__) && defined(__AVX512BF16__)
// (GCC spells the macros __AMX_TILE__, Clang 14 __AMXTILE__.)
#if !(defined(__AMX_TILE__) || defined(__AMXTILE__)) || !(defined(__AMX_BF16__) || defined(__AMXBF16__)) || \
    !(defined(__AMX_INT8__) || defined(__AMXINT8__))
#error "kernels_amx_panels.cc is compiled with -mamx-tile -mamx-bf16 -mamx-int8 wherever AVX-512 BF16 is"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "engine/kernels/cpu/i8_panel_epilogue.h"

namespace moeserve::cpu {
namespace {

// Tiles: C for panels 0..3 in tiles 0..3 (tokens × 16 fp32 or int32), A in 4 (tokens × 64
// bytes), B in 5 and 6 taking turns (16 groups × 64 bytes); where the groups are not a multiple
// of 16, the last step's A in 7 and its B in 6 (then B takes only tile 5 before it).
constexpr int kStepGroups = 16;
constexpr int kTileTokens = 16;  // tokens in one A or C tile (its rows)
constexpr int64_t kTileOutBytes = int64_t{kTileTokens} * kMaxPanelRows * 4;  // a tile's share of `out`

struct alignas(64) TileConfig {
  uint8_t palette = 0;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

thread_local TileConfig loaded_config;  // palette 0: this thread has loaded none yet

void Configure(int nt, int tail) {
  TileConfig c;
  c.palette = 1;
  for (int t = 0; t < 5; ++t) {
    c.rows[t] = static_cast<uint8_t>(nt);
    c.colsb[t] = 64;
  }
  c.rows[5] = kStepGroups;
  c.colsb[5] = 64;
  c.rows[6] = static_cast<uint8_t>(tail > 0 ? tail : kStepGroups);
  c.colsb[6] = 64;
  if (tail > 0) {
    c.rows[7] = static_cast<uint8_t>(nt);
    c.colsb[7] = static_cast<uint16_t>(4 * tail);
  }
  if (std::memcmp(&c, &loaded_config, sizeof(c)) == 0) return;
  _tile_loadconfig(&c);
  loaded_config = c;
}

// How far ahead of a step each panel's B tile is prefetched, in steps (1 KiB each), and into
// L2 (prefetcht1): the tile loads read L2 well, and at batch 1 T0 or 2 steps measured no better.
constexpr int64_t kPrefetchSteps = 4;

inline void PrefetchStep(const unsigned char* b) {
  for (int line = 0; line < kStepGroups * kPanelGroupBytes; line += 64) __builtin_prefetch(b + line, 0, 2);
}

// Tile c += tile a · tile b: bf16 pairs into fp32 (tdpbf16ps), or unsigned × signed bytes into
// exact int32 (tdpbusd). A macro: GCC's tile intrinsics paste the tile numbers into assembly.
#define MOESERVE_AMX_DOT(c, a, b) \
  if constexpr (kInt8) {          \
    _tile_dpbusd(c, a, b);        \
  } else {                        \
    _tile_dpbf16ps(c, a, b);      \
  }

// Tiles 0..NP-1 = (the partial sums at `init`, or 0) + Σ over steps [s0, s1) (and the last,
// partial step of groups % 16 if `with_tail`) of the tokens' rows at x (a_stride bytes apart)
// times panels 0..NP-1, left in the tile registers. Partial sums reloaded from memory are the
// exact fp32 (or int32) values stored, so a sum split in step ranges has the bits of one pass.
// `prefetch`: fetch the B rows kPrefetchSteps ahead (the first tile to meet them does).
template <bool kInt8, int NP>
void Accumulate(const unsigned char* w, int64_t panel_bytes, int64_t groups, const unsigned char* x,
                int64_t a_stride, int64_t s0, int64_t s1, bool with_tail, const unsigned char* init, bool prefetch) {
  const int64_t steps = groups / kStepGroups, tail = groups % kStepGroups;
  constexpr int64_t step_bytes = kStepGroups * kPanelGroupBytes;
  constexpr int64_t c_stride = kMaxPanelRows * 4;
  if (init != nullptr) {
    if constexpr (NP > 0) _tile_loadd(0, init + 0 * kPanelGroupBytes, c_stride);
    if constexpr (NP > 1) _tile_loadd(1, init + 1 * kPanelGroupBytes, c_stride);
    if constexpr (NP > 2) _tile_loadd(2, init + 2 * kPanelGroupBytes, c_stride);
    if constexpr (NP > 3) _tile_loadd(3, init + 3 * kPanelGroupBytes, c_stride);
  } else {
    if constexpr (NP > 0) _tile_zero(0);
    if constexpr (NP > 1) _tile_zero(1);
    if constexpr (NP > 2) _tile_zero(2);
    if constexpr (NP > 3) _tile_zero(3);
  }
  // One panel's step: B into tile kB, then C[p] += A · B.
#define MOESERVE_AMX_STEP(p, kB)                                                               \
  if constexpr (NP > (p)) {                                                                    \
    const unsigned char* b = w + (p) * panel_bytes + s * step_bytes;                           \
    if (prefetch && s + kPrefetchSteps < steps) PrefetchStep(b + kPrefetchSteps * step_bytes); \
    _tile_loadd(kB, b, kPanelGroupBytes);                                                      \
    MOESERVE_AMX_DOT(p, 4, kB)                                                                 \
  }
  for (int64_t s = s0; s < s1; ++s) {
    _tile_loadd(4, x + s * kPanelGroupBytes, a_stride);
    if (tail == 0) {
      MOESERVE_AMX_STEP(0, 5)
      MOESERVE_AMX_STEP(1, 6)
      MOESERVE_AMX_STEP(2, 5)
      MOESERVE_AMX_STEP(3, 6)
    } else {
      MOESERVE_AMX_STEP(0, 5)
      MOESERVE_AMX_STEP(1, 5)
      MOESERVE_AMX_STEP(2, 5)
      MOESERVE_AMX_STEP(3, 5)
    }
  }
#undef MOESERVE_AMX_STEP
  if (with_tail && tail > 0) {
    const int64_t at = steps * step_bytes;
    _tile_loadd(7, x + steps * kPanelGroupBytes, a_stride);
    if constexpr (NP > 0) { _tile_loadd(6, w + 0 * panel_bytes + at, kPanelGroupBytes); MOESERVE_AMX_DOT(0, 7, 6) }
    if constexpr (NP > 1) { _tile_loadd(6, w + 1 * panel_bytes + at, kPanelGroupBytes); MOESERVE_AMX_DOT(1, 7, 6) }
    if constexpr (NP > 2) { _tile_loadd(6, w + 2 * panel_bytes + at, kPanelGroupBytes); MOESERVE_AMX_DOT(2, 7, 6) }
    if constexpr (NP > 3) { _tile_loadd(6, w + 3 * panel_bytes + at, kPanelGroupBytes); MOESERVE_AMX_DOT(3, 7, 6) }
  }
}

#undef MOESERVE_AMX_DOT

// Tiles 0..NP-1 to out[t · kMaxPanelRows + p · 16 + i] (fp32 or int32 bits alike).
template <int NP>
void Store(void* out) {
  constexpr int64_t stride = kMaxPanelRows * 4;
  auto* o = static_cast<unsigned char*>(out);
  if constexpr (NP > 0) _tile_stored(0, o + 0 * kPanelGroupBytes, stride);
  if constexpr (NP > 1) _tile_stored(1, o + 1 * kPanelGroupBytes, stride);
  if constexpr (NP > 2) _tile_stored(2, o + 2 * kPanelGroupBytes, stride);
  if constexpr (NP > 3) _tile_stored(3, o + 3 * kPanelGroupBytes, stride);
}

// Steps of the groups per chunk when a call has several full token tiles: the chunk's B rows
// (kChunkSteps KiB per panel) are read from L2 once and serve every tile from L1, instead of
// the whole panels streaming from L2 once per tile of 16 tokens.
constexpr int64_t kChunkSteps = 4;

// The token tiles of 16 at x and out[tile · 16 · kMaxPanelRows ..] (`tiles` of them, nt = 16
// configured), or one tile of any nt (tiles = 1): all the groups of panels 0..NP-1.
template <bool kInt8, int NP>
void AmxTiles(const unsigned char* w, int64_t panel_bytes, int64_t groups, const unsigned char* x, int64_t a_stride,
              int tiles, void* out) {
  const int64_t steps = groups / kStepGroups;
  auto* o = static_cast<unsigned char*>(out);
  if (tiles == 1) {
    Accumulate<kInt8, NP>(w, panel_bytes, groups, x, a_stride, 0, steps, true, nullptr, true);
    Store<NP>(o);
    return;
  }
  for (int64_t s0 = 0;; s0 += kChunkSteps) {
    const int64_t s1 = std::min(steps, s0 + kChunkSteps);
    const bool last = s1 == steps;
    for (int tile = 0; tile < tiles; ++tile) {
      unsigned char* tile_out = o + tile * kTileOutBytes;
      Accumulate<kInt8, NP>(w, panel_bytes, groups, x + tile * kTileTokens * a_stride, a_stride, s0, s1, last,
                            s0 > 0 ? tile_out : nullptr, tile == 0);
      Store<NP>(tile_out);
    }
    if (last) return;
  }
}

template <bool kInt8>
void AmxPanels(const void* panels, int64_t panel_bytes, int np, int64_t groups, const unsigned char* x,
               int64_t a_stride, int nt, void* out) {
  static_assert(kMaxPanels == 4 && kMaxAmxPanelTokens % kTileTokens == 0);
  const auto* w = static_cast<const unsigned char*>(panels);
  const int tail = static_cast<int>(groups % kStepGroups);
  // Whole tiles of 16 tokens under one configuration, then the rest as one smaller tile.
  const int tiles = nt / kTileTokens, rest = nt % kTileTokens;
  const auto run = [&](int tile_tokens, int count, const unsigned char* xt, void* ot) {
    Configure(tile_tokens, tail);
    switch (np) {
      case 1: return AmxTiles<kInt8, 1>(w, panel_bytes, groups, xt, a_stride, count, ot);
      case 2: return AmxTiles<kInt8, 2>(w, panel_bytes, groups, xt, a_stride, count, ot);
      case 3: return AmxTiles<kInt8, 3>(w, panel_bytes, groups, xt, a_stride, count, ot);
      default: return AmxTiles<kInt8, 4>(w, panel_bytes, groups, xt, a_stride, count, ot);
    }
  };
  if (tiles > 0) run(kTileTokens, tiles, x, out);
  if (rest > 0) {
    run(rest, 1, x + int64_t{tiles} * kTileTokens * a_stride,
        static_cast<unsigned char*>(out) + tiles * kTileOutBytes);
  }
}

}  // namespace

void AmxBf16Panels(const void* panels, int64_t panel_bytes, int np, int64_t groups, const uint16_t* x,
                   int64_t x_stride, int nt, float* out) {
  AmxPanels<false>(panels, panel_bytes, np, groups, reinterpret_cast<const unsigned char*>(x), x_stride * 2, nt, out);
}

void AmxI8Panels(const void* panels, int64_t panel_bytes, int np, int64_t groups, const uint8_t* x, int64_t x_stride,
                 int nt, const I8PanelScales& sc, float* out) {
  // The sums are exact integers either way (the same bits), so tiles that vpdpbusd's kernel
  // takes in one call stay there: at batch 1 it starts its stream sooner, and for an expert's
  // few tokens over one step of 64 columns AMX's fixed cost per call made the int8 MoE layers
  // slower (batch 16: 5.6 -> 6.2 ms per step).
  if (nt <= kMaxPanelTokens) return Avx512VnniPanels(panels, panel_bytes, np, groups, x, x_stride, nt, sc, out);
  alignas(64) int32_t sums[kMaxAmxPanelTokens * kMaxPanelRows];
  AmxPanels<true>(panels, panel_bytes, np, groups, x, x_stride, nt, sums);
  // The scaling is the vpdpbusd kernel's own (i8_panel_epilogue.h).
  for (int p = 0; p < np; ++p) {
    const I8PanelRows rows = LoadI8PanelRows(sc, p);
    for (int t = 0; t < nt; ++t) {
      const int64_t at = t * kMaxPanelRows + p * kPanelRows;
      StoreI8PanelSums(_mm512_load_si512(sums + at), rows, sc.x_scales[t], out + at);
    }
  }
}

}  // namespace moeserve::cpu
#endif
