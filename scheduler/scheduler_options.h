// The scheduler's limits (the `scheduler:` section of the server config, held as is by
// ServerConfig), including the KV cache budget that the engine sizes its cache from.
#ifndef MOESERVE_SCHEDULER_SCHEDULER_OPTIONS_H_
#define MOESERVE_SCHEDULER_SCHEDULER_OPTIONS_H_

#include <cstdint>
#include <string>

namespace moeserve {

struct SchedulerOptions {
  int max_running = 64;          // sequences holding KV blocks at once
  int max_batch_tokens = 512;    // tokens per engine step (decodes + prefill chunks)
  int prefill_chunk = 256;       // largest prefill piece of one sequence in one step
  int max_waiting = 256;         // queue limit; beyond it Enqueue is RESOURCE_EXHAUSTED
  // The KV cache: tokens per block, and its size as a block count or, when 0, a memory budget.
  int kv_block_size = 16;
  int64_t kv_blocks = 0;
  int64_t kv_memory_mb = 512;
  // Reuse the KV blocks of prompt prefixes seen before (full blocks, keyed by a hash chain over
  // the model and the token ids); requests may opt out.
  bool prefix_cache = true;
  // Speculative decoding with prompt-lookup drafts: the default draft length of a request (0 =
  // off unless a request asks), and the largest number of decoding sequences at which a step
  // still speculates (beyond it a step is busy enough that verifying drafts costs more than it
  // saves: each draft token is routed, and widens the union of experts the step reads).
  int speculative_max_draft = 0;
  int speculative_max_batch = 8;
  // Fault injection, for tests and drills only: a pause after every step (makes timing-based
  // behaviour such as deadlines and draining observable on a fast model), and NaN logits for
  // every request whose request_id starts with this prefix (a model fault in one sequence).
  int debug_step_delay_ms = 0;
  std::string debug_nan_request_prefix;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SCHEDULER_OPTIONS_H_
