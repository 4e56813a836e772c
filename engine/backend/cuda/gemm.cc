#include "engine/backend/cuda/gemm.h"

#include <memory>

#include "engine/backend/cuda/cuda_status.h"

namespace moeserve::cuda {

absl::StatusOr<std::unique_ptr<Gemm>> Gemm::Create(cudaStream_t stream) {
  std::unique_ptr<Gemm> g(new Gemm());
  CUBLAS_RETURN_IF_ERROR(cublasCreate(&g->handle_));
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(g->handle_, stream));
  // fp32 GEMMs stay true fp32 (no TF32): the router decides activity from these logits.
  CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(g->handle_, CUBLAS_DEFAULT_MATH));
  // 32 MiB: cuBLAS's recommendation for Hopper (4 MiB elsewhere), enough for every GPU here.
  constexpr size_t kWorkspaceBytes = size_t{32} << 20;
  if (absl::Status s = g->workspace_.Reserve(kWorkspaceBytes); !s.ok()) return s;
  CUBLAS_RETURN_IF_ERROR(cublasSetWorkspace(g->handle_, g->workspace_.get(), kWorkspaceBytes));
  return g;
}

Gemm::~Gemm() {
  if (handle_ != nullptr) cublasDestroy(handle_);
}

// Column-major view: yᵀ [N, T] = W' [N, K] · xᵀ [K, T], where the row-major W [N, K] is the
// column-major K×N matrix, hence OP_T on it; x [T, K] row-major is K×T column-major.
absl::Status Gemm::Bf16(const bf16* x, int T, int K, const bf16* w, int N, float* y, bool accumulate) {
  if (T == 0 || N == 0) return absl::OkStatus();
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  CUBLAS_RETURN_IF_ERROR(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &alpha, w, CUDA_R_16BF, K, x,
                                      CUDA_R_16BF, K, &beta, y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

absl::Status Gemm::F32(const float* x, int T, int K, const float* w, int N, float* y, bool accumulate) {
  if (T == 0 || N == 0) return absl::OkStatus();
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  CUBLAS_RETURN_IF_ERROR(cublasSgemm(handle_, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &alpha, w, K, x, K, &beta, y, N));
  return absl::OkStatus();
}

}  // namespace moeserve::cuda
