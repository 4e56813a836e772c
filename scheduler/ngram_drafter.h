// Prompt-lookup (n-gram) drafts for speculative decoding, no draft model needed: the tokens
// that followed the most recent earlier occurrence of the sequence's last n tokens (n from
// `max_ngram` down to `min_ngram`). Code and edit tasks copy from their prompt, so these
// drafts are often right; where nothing matches there is no draft and nothing is spent.
#ifndef MOESERVE_SCHEDULER_NGRAM_DRAFTER_H_
#define MOESERVE_SCHEDULER_NGRAM_DRAFTER_H_

#include <cstdint>
#include <span>
#include <vector>

namespace moeserve {

// Up to `max_draft` tokens proposed to follow `tokens`; empty when no n-gram matches.
std::vector<int32_t> ProposeDraft(std::span<const int32_t> tokens, int max_draft, int max_ngram = 3,
                                  int min_ngram = 1);

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_NGRAM_DRAFTER_H_
