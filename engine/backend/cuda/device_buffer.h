// A typed device allocation that only ever grows: Reserve(n) reallocates when n exceeds the
// capacity and is a no-op otherwise, so workspaces are allocated once per larger batch and
// never in a steady-state step. Move-only; frees on destruction. Host code only.
#ifndef MOESERVE_ENGINE_BACKEND_CUDA_DEVICE_BUFFER_H_
#define MOESERVE_ENGINE_BACKEND_CUDA_DEVICE_BUFFER_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "engine/backend/cuda/cuda_status.h"

namespace moeserve::cuda {

// Counts every device allocation the buffers make (for the "no per-step allocation" check).
inline int64_t& DeviceAllocationCount() {
  static int64_t count = 0;
  return count;
}

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(capacity_, o.capacity_);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }

  // Ensures room for n elements; old contents are lost when it grows.
  absl::Status Reserve(size_t n) {
    if (n <= capacity_) return absl::OkStatus();
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = nullptr;
    capacity_ = 0;
    CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(&ptr_), n * sizeof(T)));
    capacity_ = n;
    ++DeviceAllocationCount();
    return absl::OkStatus();
  }
  // Reserve(n) and a synchronous copy of n host elements (load time only).
  absl::Status Upload(const T* host, size_t n) {
    if (absl::Status s = Reserve(n); !s.ok()) return s;
    if (n == 0) return absl::OkStatus();
    return CudaStatus(cudaMemcpy(ptr_, host, n * sizeof(T), cudaMemcpyHostToDevice), "DeviceBuffer::Upload");
  }

  T* get() const { return ptr_; }
  size_t capacity() const { return capacity_; }
  int64_t bytes() const { return static_cast<int64_t>(capacity_ * sizeof(T)); }
  bool empty() const { return ptr_ == nullptr; }

 private:
  T* ptr_ = nullptr;
  size_t capacity_ = 0;
};

// Page-locked host memory for the per-step uploads and downloads (async copies need it).
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
  }
  absl::Status Reserve(size_t n) {
    if (n <= capacity_) return absl::OkStatus();
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
    ptr_ = nullptr;
    capacity_ = 0;
    CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&ptr_), n * sizeof(T)));
    capacity_ = n;
    ++DeviceAllocationCount();
    return absl::OkStatus();
  }
  T* get() const { return ptr_; }
  T& operator[](size_t i) const { return ptr_[i]; }

 private:
  T* ptr_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace moeserve::cuda

#endif  // MOESERVE_ENGINE_BACKEND_CUDA_DEVICE_BUFFER_H_
