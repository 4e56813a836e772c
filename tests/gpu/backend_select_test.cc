// Backend selection without a GPU: asking for `cuda` fails cleanly (naming model.backend in a
// CPU-only build, "no CUDA device" in a CUDA build on a machine without one) and never crashes.
#include <gtest/gtest.h>

#include "engine/backend/cuda/cuda_forward.h"
#include "tests/gpu/gpu_test_util.h"

namespace moeserve {
namespace {

TEST(BackendSelect, CudaIsRefusedCleanlyWhenUnavailable) {
  auto engine = Engine::Create(gpu_testing::Options(MOESERVE_DEFAULT_MODEL_DIR, BackendChoice::kCuda));
  if (!CudaBackendBuilt()) {
    ASSERT_FALSE(engine.ok());
    EXPECT_TRUE(absl::IsFailedPrecondition(engine.status())) << engine.status();
    EXPECT_NE(engine.status().message().find("model.backend"), std::string::npos) << engine.status();
    return;
  }
  if (!gpu_testing::NoDeviceReason().empty()) {
    ASSERT_FALSE(engine.ok());
    EXPECT_TRUE(absl::IsFailedPrecondition(engine.status())) << engine.status();
    EXPECT_NE(engine.status().message().find("no CUDA device"), std::string::npos) << engine.status();
    return;
  }
  ASSERT_TRUE(engine.ok()) << engine.status();  // a GPU is present
  EXPECT_EQ((*engine)->info().backend, Backend::kCuda);
}

TEST(BackendSelect, CpuStillWorks) {
  auto engine = Engine::Create(gpu_testing::Options(MOESERVE_DEFAULT_MODEL_DIR, BackendChoice::kCpu));
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->info().backend, Backend::kCpu);
}

}  // namespace
}  // namespace moeserve
