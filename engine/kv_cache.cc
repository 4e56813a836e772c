#include "engine/kv_cache.h"

namespace moeserve {

KvCache::KvCache(const KvCacheShape& shape)
    : shape_(shape), row_(static_cast<int64_t>(shape.num_kv_heads) * shape.head_dim) {
  const int64_t bytes = static_cast<int64_t>(shape.num_layers) * shape.num_blocks * shape.block_size * row_ *
                        DTypeSize(shape.dtype);
  // Value-initialised (zeroed): a slot is always written before it is read, but zeros keep
  // the memory's contents defined.
  keys_ = std::make_unique<unsigned char[]>(bytes);
  values_ = std::make_unique<unsigned char[]>(bytes);
}

}  // namespace moeserve
