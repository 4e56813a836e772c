#include "engine/kv_cache.h"

namespace moeserve {

KvCache::KvCache(const KvCacheShape& shape)
    : shape_(shape), row_(static_cast<int64_t>(shape.num_kv_heads) * shape.head_dim) {
  const int64_t total = static_cast<int64_t>(shape.num_layers) * shape.num_blocks * shape.block_size * row_;
  keys_.assign(total, 0.0f);
  values_.assign(total, 0.0f);
}

}  // namespace moeserve
