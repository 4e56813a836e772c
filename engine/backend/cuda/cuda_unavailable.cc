// The CUDA backend's entry points in a binary built without it (MOESERVE_CUDA=OFF): the engine
// links the same symbols either way, so no #ifdef reaches the code above the backends.
#include "absl/status/status.h"
#include "engine/backend/cuda/cuda_forward.h"

namespace moeserve {

bool CudaBackendBuilt() { return false; }

CudaProbe ProbeCudaDevices() { return CudaProbe{0, "this binary has no CUDA backend"}; }

absl::StatusOr<std::unique_ptr<ForwardBackend>> CreateCudaForward(const ModelWeights&, const BackendOptions&) {
  return absl::FailedPreconditionError(
      "model.backend: cuda is not available in this build (configure with -DMOESERVE_CUDA=ON and nvcc present)");
}

}  // namespace moeserve
