#include "engine/backend/create_backend.h"

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_forward.h"
#include "engine/backend/cuda/cuda_forward.h"

namespace moeserve {

const char* BackendName(Backend b) { return b == Backend::kCuda ? "cuda" : "cpu"; }

const char* BackendChoiceName(BackendChoice b) {
  switch (b) {
    case BackendChoice::kAuto: return "auto";
    case BackendChoice::kCpu: return "cpu";
    case BackendChoice::kCuda: return "cuda";
  }
  return "?";
}

absl::StatusOr<BackendDecision> DecideBackend(BackendChoice choice) {
  switch (choice) {
    case BackendChoice::kCpu:
      return BackendDecision{Backend::kCpu, "model.backend is cpu"};
    case BackendChoice::kCuda:
      if (!CudaBackendBuilt()) {
        return absl::FailedPreconditionError(
            "model.backend: cuda is not available in this build (configure with -DMOESERVE_CUDA=ON and nvcc present)");
      }
      return BackendDecision{Backend::kCuda, "model.backend is cuda"};
    case BackendChoice::kAuto:
      break;
  }
  if (!CudaBackendBuilt()) return BackendDecision{Backend::kCpu, "auto: this binary has no CUDA backend"};
  const CudaProbe probe = ProbeCudaDevices();
  if (probe.device_count > 0) {
    return BackendDecision{Backend::kCuda, absl::StrCat("auto: ", probe.device_count, " CUDA device(s) found")};
  }
  return BackendDecision{Backend::kCpu, absl::StrCat("auto: no CUDA device (", probe.error, ")")};
}

absl::StatusOr<std::unique_ptr<ForwardBackend>> CreateBackend(Backend backend, ModelWeights& weights,
                                                              const BackendOptions& options) {
  if (backend == Backend::kCuda) return CreateCudaForward(weights, options);
  return CreateCpuForward(weights, options);
}

}  // namespace moeserve
