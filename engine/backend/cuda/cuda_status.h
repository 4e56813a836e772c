// absl::Status adapters for CUDA runtime and cuBLAS return codes. Host code only.
#ifndef MOESERVE_ENGINE_BACKEND_CUDA_CUDA_STATUS_H_
#define MOESERVE_ENGINE_BACKEND_CUDA_CUDA_STATUS_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moeserve::cuda {

inline absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA error in ", what, ": ", cudaGetErrorName(e), " (",
                                          cudaGetErrorString(e), ")"));
}

inline absl::Status CublasStatus(cublasStatus_t e, const char* what) {
  if (e == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cuBLAS error in ", what, ": ", cublasGetStatusName(e)));
}

}  // namespace moeserve::cuda

// Evaluates a cudaError_t expression; returns an InternalError naming it on failure.
#define CUDA_RETURN_IF_ERROR(expr)                                                   \
  do {                                                                               \
    absl::Status _cuda_status = ::moeserve::cuda::CudaStatus((expr), #expr);         \
    if (!_cuda_status.ok()) return _cuda_status;                                     \
  } while (0)

#define CUBLAS_RETURN_IF_ERROR(expr)                                                 \
  do {                                                                               \
    absl::Status _cublas_status = ::moeserve::cuda::CublasStatus((expr), #expr);     \
    if (!_cublas_status.ok()) return _cublas_status;                                 \
  } while (0)

#endif  // MOESERVE_ENGINE_BACKEND_CUDA_CUDA_STATUS_H_
