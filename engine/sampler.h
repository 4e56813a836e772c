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

  // Speculative decoding's verification of one draft token: the returned token is distributed
  // exactly as Sample's (greedy: the same token); *accepted tells whether it is the draft.
  SampledToken SampleAgainstDraft(std::span<const float> logits, std::span<const int32_t> history, int32_t draft,
                                  bool* accepted);

 private:
  // Penalties, temperature and truncation. Returns the token when the choice is deterministic
  // (greedy), else -1 with the kept candidates and their weights in kept_ids_/kept_weights_.
  int32_t Prepare(std::span<const float> logits, std::span<const int32_t> history);
  // One draw from the kept candidates, `excluded` left out (-1: none).
  int32_t Draw(int32_t excluded);

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> work_;
  std::vector<int32_t> order_;
  std::vector<int32_t> kept_ids_;
  std::vector<double> kept_weights_;
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_SAMPLER_H_
