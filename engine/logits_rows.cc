#include "engine/logits_rows.h"

namespace moeserve {

std::vector<int32_t> SelectLogitsRows(const ForwardBatch& batch, int64_t vocab_size, ForwardOutput* out) {
  std::vector<int32_t> rows;
  out->vocab_size = vocab_size;
  out->chunk_logits_begin.assign(1, 0);
  int32_t t0 = 0;
  for (const SequenceChunk& c : batch.chunks) {
    const int32_t n = static_cast<int32_t>(c.tokens.size());
    if (c.logits == LogitsMode::kAll) {
      for (int32_t i = 0; i < n; ++i) rows.push_back(t0 + i);
    } else if (c.logits == LogitsMode::kLast) {
      rows.push_back(t0 + n - 1);
    }
    out->chunk_logits_begin.push_back(static_cast<int32_t>(rows.size()));
    t0 += n;
  }
  out->logits.resize(rows.size() * vocab_size);
  return rows;
}

}  // namespace moeserve
