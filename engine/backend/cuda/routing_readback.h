// The bridge between the device routers' dense form (flags/weights [T, E], kernels.h) and the
// engine's CSR Routing: the step copies the dense form back once, and the observer gets a
// Routing rebuilt here; layers routed on the host go the other way before their upload.
#ifndef MOESERVE_ENGINE_BACKEND_CUDA_ROUTING_READBACK_H_
#define MOESERVE_ENGINE_BACKEND_CUDA_ROUTING_READBACK_H_

#include <cstdint>

#include "engine/moe/routing.h"

namespace moeserve::cuda {

// Entries with bit kRouted, ascending experts per token; `active` from bit kActive; |A| per
// token from num_active.
void RoutingFromDense(const uint8_t* flags, const float* weight, const int32_t* num_active, int64_t T, int E,
                      Routing& out);

// Inverse of RoutingFromDense: fills flags/weights [T, E] (zeros where no entry) and |A| [T].
void DenseFromRouting(const Routing& r, int E, uint8_t* flags, float* weight, int32_t* num_active);

}  // namespace moeserve::cuda

#endif  // MOESERVE_ENGINE_BACKEND_CUDA_ROUTING_READBACK_H_
