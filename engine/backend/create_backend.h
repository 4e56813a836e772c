// The one place a ForwardBackend is chosen and built: model.backend (auto | cpu | cuda) against
// what this binary has and what the machine offers.
#ifndef MOESERVE_ENGINE_BACKEND_CREATE_BACKEND_H_
#define MOESERVE_ENGINE_BACKEND_CREATE_BACKEND_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/engine_info.h"
#include "engine/forward_backend.h"
#include "engine/model_weights.h"

namespace moeserve {

struct BackendDecision {
  Backend backend = Backend::kCpu;
  std::string reason;  // one line, for the log and EngineInfo
};

// Resolves `choice`: kAuto takes CUDA when this binary has it and a device is usable.
// An explicit kCuda without the build is FailedPrecondition naming model.backend.
absl::StatusOr<BackendDecision> DecideBackend(BackendChoice choice);

// Builds the decided backend over `weights` (which must outlive it; the CPU backend repacks
// them for its kernels).
absl::StatusOr<std::unique_ptr<ForwardBackend>> CreateBackend(Backend backend, ModelWeights& weights,
                                                              const BackendOptions& options);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_BACKEND_CREATE_BACKEND_H_
