// Dense projections through cuBLAS, in the engine's row-major convention:
// y[T, N] (+)= x[T, K] · W[N, K]ᵀ with W stored [out, in] (PyTorch Linear layout).
// bf16 × bf16 with fp32 accumulation and fp32 output (tensor cores), or fp32 × fp32 for the
// router and the NormSiLU mean (spec deco.md §3.5: router logits in fp32).
//
// The handle gets its own fixed workspace (cublasSetWorkspace), so that GEMMs captured into a
// CUDA graph never allocate.
//
// Thread-safety: one Gemm per stream/engine; not thread-safe.
#ifndef MOESERVE_ENGINE_BACKEND_CUDA_GEMM_H_
#define MOESERVE_ENGINE_BACKEND_CUDA_GEMM_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/statusor.h"
#include "engine/backend/cuda/device_buffer.h"
#include "engine/backend/cuda/kernels.h"

namespace moeserve::cuda {

class Gemm {
 public:
  static absl::StatusOr<std::unique_ptr<Gemm>> Create(cudaStream_t stream);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  absl::Status Bf16(const bf16* x, int T, int K, const bf16* w, int N, float* y, bool accumulate);
  absl::Status F32(const float* x, int T, int K, const float* w, int N, float* y, bool accumulate);

 private:
  Gemm() = default;
  cublasHandle_t handle_ = nullptr;
  DeviceBuffer<unsigned char> workspace_;
};

}  // namespace moeserve::cuda

#endif  // MOESERVE_ENGINE_BACKEND_CUDA_GEMM_H_
