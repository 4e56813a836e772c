// Which hidden rows of a step get logits: every token of a kAll chunk, the last of a kLast
// chunk, none of a kNone chunk. Shared by the backends so both fill ForwardOutput alike.
#ifndef MOESERVE_ENGINE_LOGITS_ROWS_H_
#define MOESERVE_ENGINE_LOGITS_ROWS_H_

#include <cstdint>
#include <vector>

#include "engine/forward_batch.h"

namespace moeserve {

// Token indices (in batch order) of the rows, ascending; sets out->chunk_logits_begin and
// out->vocab_size, and sizes out->logits for them.
std::vector<int32_t> SelectLogitsRows(const ForwardBatch& batch, int64_t vocab_size, ForwardOutput* out);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_LOGITS_ROWS_H_
