// CUDA graphs of pure-decode steps, one per (batch size, logits rows): captured on the first
// step of a shape, replayed after. The captured region enqueues only kernels, cuBLAS calls,
// memsets and event records on fixed workspaces; the step's metadata is uploaded into those
// workspaces before the replay and results are copied back after it. Any workspace
// reallocation invalidates every graph (Clear). MOESERVE_CUDA_GRAPHS=0 turns graphs off.
//
// Thread-safety: not thread-safe (one caller, like the backend).
#ifndef MOESERVE_ENGINE_BACKEND_CUDA_DECODE_GRAPHS_H_
#define MOESERVE_ENGINE_BACKEND_CUDA_DECODE_GRAPHS_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <map>

#include "absl/status/status.h"

namespace moeserve::cuda {

// False when the environment sets MOESERVE_CUDA_GRAPHS=0.
bool CudaGraphsEnabledByEnv();

class DecodeGraphs {
 public:
  explicit DecodeGraphs(bool enabled) : enabled_(enabled) {}
  ~DecodeGraphs() { Clear(); }
  DecodeGraphs(const DecodeGraphs&) = delete;
  DecodeGraphs& operator=(const DecodeGraphs&) = delete;

  bool enabled() const { return enabled_; }
  // Turns graphs off for the backend's lifetime (after a failed capture).
  void Disable() {
    Clear();
    enabled_ = false;
  }
  void Clear();
  int64_t size() const { return static_cast<int64_t>(graphs_.size()); }

  // Launches the graph of `key` on `stream`, capturing `enqueue` first when there is none.
  // A capture that fails returns Unavailable (the stream is out of capture mode again and the
  // caller runs the step eagerly); a failed launch returns Internal.
  absl::Status Run(int64_t key, cudaStream_t stream, const std::function<absl::Status()>& enqueue);

 private:
  bool enabled_;
  std::map<int64_t, cudaGraphExec_t> graphs_;
};

}  // namespace moeserve::cuda

#endif  // MOESERVE_ENGINE_BACKEND_CUDA_DECODE_GRAPHS_H_
