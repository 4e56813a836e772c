#include "engine/backend/cuda/moe_workspace.h"

#include <algorithm>

#include "common/status_macros.h"

namespace moeserve::cuda {
namespace {

// Int arrays of the grouping, in this order inside `ints` (P = T·E).
struct IntLayout {
  int64_t row_count, token_begin, entry_expert, entry_slot, entry_of, expert_count, expert_begin, tile_base,
      slot_token, tile_expert, tile_begin, tile_count, num_tiles, total;
};

IntLayout Layout(int64_t T, int64_t E) {
  const int64_t P = T * E;  // also ≥ MaxExpertTiles(T, E, max_tile) for every max_tile ≥ 1
  IntLayout l;
  int64_t at = 0;
  auto take = [&](int64_t n) {
    const int64_t here = at;
    at += n;
    return here;
  };
  l.row_count = take(T);
  l.token_begin = take(T + 1);
  l.entry_expert = take(P);
  l.entry_slot = take(P);
  l.entry_of = take(P);
  l.expert_count = take(E);
  l.expert_begin = take(E + 1);
  l.tile_base = take(E + 1);
  l.slot_token = take(P);
  l.tile_expert = take(P);
  l.tile_begin = take(P);
  l.tile_count = take(P);
  l.num_tiles = take(1);
  l.total = at;
  return l;
}

}  // namespace

absl::Status MoeWorkspace::Reserve(int64_t t, int64_t layers, int64_t e, int64_t d, int64_t H, bool grouped_down) {
  T = t;
  E = e;
  const int64_t P = std::max<int64_t>(T * E, 1), L = std::max<int64_t>(layers, 1);
  RETURN_IF_ERROR(flags.Reserve(L * P));
  RETURN_IF_ERROR(weight.Reserve(L * P));
  RETURN_IF_ERROR(num_active.Reserve(L * std::max<int64_t>(T, 1)));
  RETURN_IF_ERROR(union_size.Reserve(L));
  RETURN_IF_ERROR(flags_h.Reserve(L * P));
  RETURN_IF_ERROR(weight_h.Reserve(L * P));
  RETURN_IF_ERROR(num_active_h.Reserve(L * std::max<int64_t>(T, 1)));
  RETURN_IF_ERROR(union_size_h.Reserve(L));
  RETURN_IF_ERROR(router_logits.Reserve(P));
  RETURN_IF_ERROR(router_logits_h.Reserve(P));
  RETURN_IF_ERROR(mean.Reserve(std::max<int64_t>(T, 1)));
  RETURN_IF_ERROR(hidden.Reserve(P * std::max<int64_t>(d, 1)));
  if (grouped_down) RETURN_IF_ERROR(part.Reserve(P * H));
  RETURN_IF_ERROR(ints.Reserve(Layout(T, E).total));
  RETURN_IF_ERROR(floats.Reserve(2 * P));
  return absl::OkStatus();
}

GroupArgs MoeWorkspace::Group(int slot, int e, int max_tile, bool dense) const {
  const IntLayout l = Layout(T, E);
  int32_t* base = ints.get();
  GroupArgs g;
  g.T = static_cast<int>(T);
  g.E = e;
  g.max_tile = max_tile;
  g.dense = dense;
  g.flags = layer_flags(slot);
  g.weight = layer_weight(slot);
  g.row_count = base + l.row_count;
  g.token_begin = base + l.token_begin;
  g.entry_expert = base + l.entry_expert;
  g.entry_weight = floats.get();
  g.entry_slot = base + l.entry_slot;
  g.entry_of = base + l.entry_of;
  g.expert_count = base + l.expert_count;
  g.expert_begin = base + l.expert_begin;
  g.tile_base = base + l.tile_base;
  g.slot_token = base + l.slot_token;
  g.slot_weight = floats.get() + T * E;
  g.tile_expert = base + l.tile_expert;
  g.tile_begin = base + l.tile_begin;
  g.tile_count = base + l.tile_count;
  g.num_tiles = base + l.num_tiles;
  g.union_size = union_size.get() + slot;
  return g;
}

}  // namespace moeserve::cuda
