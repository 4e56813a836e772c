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
  // Fault injection, for tests and drills only: a pause after every step (makes timing-based
  // behaviour such as deadlines and draining observable on a fast model), and NaN logits for
  // every request whose request_id starts with this prefix (a model fault in one sequence).
  int debug_step_delay_ms = 0;
  std::string debug_nan_request_prefix;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SCHEDULER_OPTIONS_H_
