// Helpers of the GPU tests: device detection (tests skip with "no CUDA device: ..." when none is
// usable), generated checkpoints, and a driver that runs the same token stream through an engine
// as one prefill chunk followed by single-token decode steps.
#ifndef MOESERVE_TESTS_GPU_GPU_TEST_UTIL_H_
#define MOESERVE_TESTS_GPU_GPU_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace moeserve::gpu_testing {

// Empty when a CUDA device is usable, else why not.
std::string NoDeviceReason();

#define MOESERVE_SKIP_WITHOUT_GPU()                                  \
  do {                                                               \
    const std::string _why = ::moeserve::gpu_testing::NoDeviceReason(); \
    if (!_why.empty()) GTEST_SKIP() << "no CUDA device: " << _why;   \
  } while (0)

// Generates (once per process) a checkpoint with tools/gen_tiny_model.py; returns its directory.
std::string GenerateModel(const std::string& name, const std::string& args);

// Active expert set per [layer][token] of the run (from EngineObserver::OnRouting).
using ActiveSets = std::vector<std::vector<std::vector<int32_t>>>;

struct RunResult {
  std::vector<float> logits;  // [tokens, vocab], one row per position
  int64_t vocab = 0;
  ActiveSets active;
};

// Prefill tokens[0, prefill) as one chunk (all logits), then one decode step per remaining token,
// every chunk with `budget`.
RunResult RunSequence(Engine& engine, const std::vector<int32_t>& tokens, int prefill,
                      const ExpertBudget& budget = ExpertBudget{});

// Sets an environment variable for the scope (the CUDA backend reads MOESERVE_CUDA_GRAPHS and
// MOESERVE_CUDA_HOST_ROUTING when it is created); restores the previous value after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value);
  ~ScopedEnv();
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

EngineOptions Options(const std::string& model_dir, BackendChoice backend);

}  // namespace moeserve::gpu_testing

#endif  // MOESERVE_TESTS_GPU_GPU_TEST_UTIL_H_
