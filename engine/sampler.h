// Token sampling from one row of logits: penalties, temperature, top-k, top-p, min-p, with a
// per-request seeded generator so that a seeded request is reproducible (also across
// preemption and recompute, since the generator state lives with the request).
#ifndef MOESERVE_ENGINE_SAMPLER_H_
#define MOESERVE_ENGINE_SAMPLER_H_

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace moeserve {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off
  float min_p = 0.0f;        // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off (divides positive logits, multiplies negative)
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  uint64_t seed = 0;
};

// (Log-probabilities, when a request asks for them, come from ComputeLogprobs over the raw
// logits; the sampler does not spend a pass over the vocabulary on them.)
struct SampledToken {
  int32_t id = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

  // `history` = prompt and generated tokens so far (for the penalties).
  SampledToken Sample(std::span<const float> logits, std::span<const int32_t> history);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> work_;
  std::vector<int32_t> order_;
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_SAMPLER_H_
