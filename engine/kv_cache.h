// Paged key/value cache memory: fixed-size blocks of `block_size` token slots per layer.
// Which blocks a sequence owns is the caller's business (the scheduler's block allocator, or
// the engine CLI's trivial one); the engine only reads and writes through block tables.
//
// Layout per layer: [num_blocks][block_size][num_kv_heads][head_dim] float32, keys and values
// in separate arrays.
#ifndef MOESERVE_ENGINE_KV_CACHE_H_
#define MOESERVE_ENGINE_KV_CACHE_H_

#include <cstdint>
#include <vector>

namespace moeserve {

struct KvCacheShape {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;
  int64_t num_blocks = 0;

  // Bytes of one block across all layers (keys and values).
  int64_t BytesPerBlock() const {
    return int64_t{2} * num_layers * block_size * num_kv_heads * head_dim * sizeof(float);
  }
};

class KvCache {
 public:
  explicit KvCache(const KvCacheShape& shape);

  const KvCacheShape& shape() const { return shape_; }

  // The [num_kv_heads, head_dim] slot of token `slot` in `block` of `layer`.
  float* Key(int layer, int32_t block, int slot) { return keys_.data() + Offset(layer, block, slot); }
  float* Value(int layer, int32_t block, int slot) { return values_.data() + Offset(layer, block, slot); }
  const float* Key(int layer, int32_t block, int slot) const { return keys_.data() + Offset(layer, block, slot); }
  const float* Value(int layer, int32_t block, int slot) const {
    return values_.data() + Offset(layer, block, slot);
  }

 private:
  int64_t Offset(int layer, int32_t block, int slot) const {
    return ((static_cast<int64_t>(layer) * shape_.num_blocks + block) * shape_.block_size + slot) * row_;
  }
  KvCacheShape shape_;
  int64_t row_;  // floats per token slot
  std::vector<float> keys_;
  std::vector<float> values_;
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_KV_CACHE_H_
