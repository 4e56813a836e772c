#include "scheduler/ngram_drafter.h"

#include <algorithm>

namespace moeserve {

std::vector<int32_t> ProposeDraft(std::span<const int32_t> tokens, int max_draft, int max_ngram, int min_ngram) {
  const int64_t size = static_cast<int64_t>(tokens.size());
  if (max_draft <= 0) return {};
  for (int64_t n = max_ngram; n >= min_ngram; --n) {
    if (size <= n) continue;
    const auto suffix = tokens.subspan(size - n);
    // The most recent earlier occurrence that has at least one token after it.
    for (int64_t start = size - n - 1; start >= 0; --start) {
      if (!std::equal(suffix.begin(), suffix.end(), tokens.begin() + start)) continue;
      const int64_t from = start + n, to = std::min<int64_t>(size, from + max_draft);
      return {tokens.begin() + from, tokens.begin() + to};
    }
  }
  return {};
}

}  // namespace moeserve
