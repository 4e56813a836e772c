#include "engine/backend/cuda/decode_graphs.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/backend/cuda/cuda_status.h"

namespace moeserve::cuda {

bool CudaGraphsEnabledByEnv() {
  const char* v = std::getenv("MOESERVE_CUDA_GRAPHS");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

void DecodeGraphs::Clear() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
}

absl::Status DecodeGraphs::Run(int64_t key, cudaStream_t stream, const std::function<absl::Status()>& enqueue) {
  auto it = graphs_.find(key);
  if (it == graphs_.end()) {
    // Thread-local mode: only this thread's unsafe calls (allocation, sync) break the capture.
    CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    const absl::Status enqueued = enqueue();
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
    cudaGraphExec_t exec = nullptr;
    cudaError_t made = cudaErrorUnknown;
    if (enqueued.ok() && ended == cudaSuccess) made = cudaGraphInstantiate(&exec, graph, 0);
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (!enqueued.ok() || ended != cudaSuccess || made != cudaSuccess) {
      cudaGetLastError();  // a failed capture is not sticky; clear it for the eager rerun
      return absl::UnavailableError(absl::StrCat(
          "CUDA graph capture failed (", !enqueued.ok() ? std::string(enqueued.message())
                                         : ended != cudaSuccess ? cudaGetErrorString(ended)
                                                                : cudaGetErrorString(made),
          ")"));
    }
    it = graphs_.emplace(key, exec).first;
  }
  return CudaStatus(cudaGraphLaunch(it->second, stream), "cudaGraphLaunch");
}

}  // namespace moeserve::cuda
