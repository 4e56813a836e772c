// Device workspaces of a step's MoE layers, sized for the worst case of T tokens (every expert
// for every token: P = T·E entries), so a step never allocates and a captured graph can replay
// on them:
//   per MoE layer (kept until the end of the step, when they are copied back once):
//     flags/weight [T, E] (the dense routing, kernels.h), num_active [T], union size [1];
//   shared by the layers (stream-ordered reuse):
//     router logits [T, E], ū·m [T], the grouping (GroupArgs), hidden [P, d], and the
//     expert-major down partials [P, H] when that path is on.
// Pinned host mirrors take the copies back (and the host-routed layers' uploads).
#ifndef MOESERVE_ENGINE_BACKEND_CUDA_MOE_WORKSPACE_H_
#define MOESERVE_ENGINE_BACKEND_CUDA_MOE_WORKSPACE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "engine/backend/cuda/device_buffer.h"
#include "engine/backend/cuda/kernels.h"

namespace moeserve::cuda {

struct MoeWorkspace {
  int64_t T = 0, E = 0;  // the shape of the current step (E: the widest MoE layer)

  // Per MoE layer `slot`.
  DeviceBuffer<uint8_t> flags;
  DeviceBuffer<float> weight;
  DeviceBuffer<int32_t> num_active, union_size;
  PinnedBuffer<uint8_t> flags_h;
  PinnedBuffer<float> weight_h;
  PinnedBuffer<int32_t> num_active_h, union_size_h;

  // Shared.
  DeviceBuffer<float> router_logits, mean, hidden, part;
  PinnedBuffer<float> router_logits_h;  // host-routed layers only
  DeviceBuffer<int32_t> ints;           // the grouping's int arrays, see Group()
  DeviceBuffer<float> floats;           // entry_weight, slot_weight

  // Grows every buffer for T tokens over `layers` MoE layers of ≤ E experts and width ≤ d;
  // `part` only when `grouped_down`.
  absl::Status Reserve(int64_t T, int64_t layers, int64_t E, int64_t d, int64_t H, bool grouped_down);

  uint8_t* layer_flags(int slot) const { return flags.get() + slot * T * E; }
  float* layer_weight(int slot) const { return weight.get() + slot * T * E; }
  int32_t* layer_num_active(int slot) const { return num_active.get() + slot * T; }

  // GroupArgs over this step's buffers for a layer of `e` experts (the offsets depend only on
  // T and E, so they are the same in every replay of a graph).
  GroupArgs Group(int slot, int e, int max_tile, bool dense) const;
};

}  // namespace moeserve::cuda

#endif  // MOESERVE_ENGINE_BACKEND_CUDA_MOE_WORKSPACE_H_
