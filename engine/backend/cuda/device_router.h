// The device router of one MoE layer: cuda::RouterArgs filled once from the layer's RouterSpec
// (its norm weights and expert bias uploaded), ready for LaunchRoute. Every RouterKind routes on
// the device when E ≤ kMaxDeviceExperts; otherwise `on_device` is false and cuda_forward.cc
// routes that layer on the host with the reference Router (one sync per such layer, no graphs).
#ifndef MOESERVE_ENGINE_BACKEND_CUDA_DEVICE_ROUTER_H_
#define MOESERVE_ENGINE_BACKEND_CUDA_DEVICE_ROUTER_H_

#include "absl/status/status.h"
#include "engine/backend/cuda/device_buffer.h"
#include "engine/backend/cuda/kernels.h"
#include "engine/moe/router.h"

namespace moeserve::cuda {

struct DeviceRouter {
  bool on_device = false;
  RouterArgs args;  // static fields only; the step fills T, logits, budget and outputs
  DeviceBuffer<float> norm_weight, expert_bias;
};

// `force_host` keeps the layer on the host path (MOESERVE_CUDA_HOST_ROUTING=1, for comparisons).
absl::Status BuildDeviceRouter(const RouterSpec& spec, bool force_host, DeviceRouter& out);

}  // namespace moeserve::cuda

#endif  // MOESERVE_ENGINE_BACKEND_CUDA_DEVICE_ROUTER_H_
