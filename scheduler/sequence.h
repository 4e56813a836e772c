// The serving loop's state for one request: its tokens, KV blocks, sampler, detokenizer and
// stop matcher. Lives on the loop thread only.
#ifndef MOESERVE_SCHEDULER_SEQUENCE_H_
#define MOESERVE_SCHEDULER_SEQUENCE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "scheduler/request.h"
#include "scheduler/stop_matcher.h"

namespace moeserve {

struct Sequence {
  Sequence(uint64_t id, RequestParams p, std::shared_ptr<RequestSink> s, const Tokenizer* tokenizer)
      : id(id),
        params(std::move(p)),
        sink(std::move(s)),
        tokens(params.prompt),
        prompt_len(static_cast<int>(params.prompt.size())),
        sampler(params.sampling),
        detokenizer(tokenizer),
        stop(params.stop_strings) {}

  int generated() const { return static_cast<int>(tokens.size()) - prompt_len; }
  // Tokens not yet in the KV cache (the prompt, or recomputation after preemption, or 1).
  int64_t pending() const { return static_cast<int64_t>(tokens.size()) - computed; }
  // Scheduling precedence: higher priority first, then first come first served.
  bool RunsBefore(const Sequence& o) const {
    return params.priority != o.params.priority ? params.priority > o.params.priority : id < o.id;
  }

  uint64_t id;  // also the arrival order
  RequestParams params;
  std::shared_ptr<RequestSink> sink;
  std::vector<int32_t> tokens;  // prompt + generated
  int prompt_len;
  int64_t computed = 0;         // tokens whose keys/values are in the cache
  std::vector<int32_t> blocks;  // KV block table
  // Prefix cache: content hashes of the first full blocks of `tokens` (a function of the tokens
  // alone, so they survive preemption), and how many of `blocks` are published to the cache.
  std::vector<uint64_t> block_hashes;
  int64_t published_blocks = 0;
  // Speculative decoding: this step's draft (empty: none) and the chunk it is verified in (the
  // last known token, then the draft); the most draft tokens the request allows.
  std::vector<int32_t> draft;
  std::vector<int32_t> verify;
  int max_draft = 0;
  Sampler sampler;              // keeps its RNG state across preemption: same tokens on resume
  StreamingDetokenizer detokenizer;
  StopMatcher stop;
  std::vector<LayerRouting> routing;  // per MoE layer, this request's totals
  int preemptions = 0;
  Clock::time_point scheduled_at{};   // first admission
  Clock::time_point last_token_at{};  // for inter-token latency
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SEQUENCE_H_
