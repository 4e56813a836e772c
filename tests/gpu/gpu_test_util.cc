#include "tests/gpu/gpu_test_util.h"

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <stdexcept>

#include "engine/backend/cuda/cuda_forward.h"

namespace moeserve::gpu_testing {

std::string NoDeviceReason() {
  if (!CudaBackendBuilt()) return "this build has no CUDA backend (MOESERVE_CUDA=OFF)";
  const CudaProbe probe = ProbeCudaDevices();
  return probe.device_count > 0 ? "" : "cudaGetDeviceCount: " + probe.error;
}

std::string GenerateModel(const std::string& name, const std::string& args) {
  static std::map<std::string, std::string> made;
  if (auto it = made.find(name); it != made.end()) return it->second;
  const std::string dir = std::string(MOESERVE_GPU_TEST_WORK) + "/" + name;
  std::filesystem::create_directories(dir);
  const std::string cmd = std::string(MOESERVE_PYTHON) + " " + MOESERVE_GEN_TINY_MODEL + " --out " + dir + " " +
                          args + " > " + dir + "/gen.log 2>&1";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("model generation failed: " + cmd);
  made[name] = dir;
  return dir;
}

namespace {

class RoutingRecorder : public EngineObserver {
 public:
  explicit RoutingRecorder(ActiveSets* sets) : sets_(sets) {}
  void OnRouting(int layer, const Routing& r) override {
    if (static_cast<int>(sets_->size()) <= layer) sets_->resize(layer + 1);
    for (int64_t t = 0; t < r.num_tokens(); ++t) {
      std::vector<int32_t> set;
      for (int32_t i = r.offsets[t]; i < r.offsets[t + 1]; ++i) {
        if (r.active[i]) set.push_back(r.experts[i]);
      }
      (*sets_)[layer].push_back(std::move(set));
    }
  }

 private:
  ActiveSets* sets_;
};

}  // namespace

EngineOptions Options(const std::string& model_dir, BackendChoice backend) {
  EngineOptions o;
  o.model_dir = model_dir;
  o.backend = backend;
  o.num_threads = 2;
  o.kv_block_size = 16;
  o.kv_num_blocks = 64;
  return o;
}

ScopedEnv::ScopedEnv(const char* name, const char* value) : name_(name) {
  if (const char* old = std::getenv(name); old != nullptr) {
    had_ = true;
    old_ = old;
  }
  setenv(name, value, 1);
}

ScopedEnv::~ScopedEnv() {
  if (had_) {
    setenv(name_.c_str(), old_.c_str(), 1);
  } else {
    unsetenv(name_.c_str());
  }
}

RunResult RunSequence(Engine& engine, const std::vector<int32_t>& tokens, int prefill, const ExpertBudget& budget) {
  RunResult result;
  result.vocab = engine.info().vocab_size;
  RoutingRecorder recorder(&result.active);
  engine.set_observer(&recorder);
  std::vector<int32_t> table(engine.info().kv.num_blocks);
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<int32_t>(i);
  const int n = static_cast<int>(tokens.size());
  for (int start = 0; start < n;) {
    const int len = start == 0 ? prefill : 1;
    ForwardBatch batch;
    SequenceChunk chunk;
    chunk.tokens = std::span<const int32_t>(tokens.data() + start, len);
    chunk.start_position = start;
    const int blocks = (start + len + engine.info().kv.block_size - 1) / engine.info().kv.block_size;
    chunk.block_table = std::span<const int32_t>(table.data(), blocks);
    chunk.logits = LogitsMode::kAll;
    chunk.budget = budget;
    batch.chunks.push_back(chunk);
    ForwardOutput out;
    const absl::Status s = engine.Forward(batch, &out);
    if (!s.ok()) throw std::runtime_error(std::string(s.message()));
    result.logits.insert(result.logits.end(), out.logits.begin(), out.logits.end());
    start += len;
  }
  engine.set_observer(nullptr);
  return result;
}

}  // namespace moeserve::gpu_testing
