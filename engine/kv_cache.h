// Paged key/value cache memory: fixed-size blocks of `block_size` token slots per layer.
// Which blocks a sequence owns is the caller's business (the scheduler's block allocator, or
// the engine CLI's trivial one); the engine only reads and writes through block tables.
//
// Layout per layer: [num_blocks][block_size][num_kv_heads][head_dim] of the cache's element
// type (fp32, or bf16: half the bytes, twice the blocks for a memory budget), keys and values
// in separate arrays.
#ifndef MOESERVE_ENGINE_KV_CACHE_H_
#define MOESERVE_ENGINE_KV_CACHE_H_

#include <cstdint>
#include <memory>

#include "engine/dtype.h"

namespace moeserve {

struct KvCacheShape {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;
  int64_t num_blocks = 0;
  DType dtype = DType::kF32;  // kF32 or kBF16

  // Bytes of one block across all layers (keys and values).
  int64_t BytesPerBlock() const {
    return int64_t{2} * num_layers * block_size * num_kv_heads * head_dim * DTypeSize(dtype);
  }
};

// The KV element type when none is configured: bf16 wherever the compute dtype is below fp32
// (the spec's bf16 precision, deco.md §3.5, keeps K and V in bf16) and on CUDA (its device
// cache is bf16); fp32 for fp32 compute on the CPU, which the fp32 acceptance bounds need.
inline DType DefaultKvDType(bool cuda_backend, DType compute) {
  return cuda_backend || compute != DType::kF32 ? DType::kBF16 : DType::kF32;
}

class KvCache {
 public:
  explicit KvCache(const KvCacheShape& shape);

  const KvCacheShape& shape() const { return shape_; }

  // The [num_kv_heads, head_dim] slot of token `slot` in `block` of `layer`, for an fp32 cache.
  float* Key(int layer, int32_t block, int slot) { return At<float>(keys_.get(), layer, block, slot); }
  float* Value(int layer, int32_t block, int slot) { return At<float>(values_.get(), layer, block, slot); }
  const float* Key(int layer, int32_t block, int slot) const { return At<float>(keys_.get(), layer, block, slot); }
  const float* Value(int layer, int32_t block, int slot) const {
    return At<float>(values_.get(), layer, block, slot);
  }
  // The same slots of a bf16 cache (raw bits).
  uint16_t* KeyBf16(int layer, int32_t block, int slot) { return At<uint16_t>(keys_.get(), layer, block, slot); }
  uint16_t* ValueBf16(int layer, int32_t block, int slot) { return At<uint16_t>(values_.get(), layer, block, slot); }
  const uint16_t* KeyBf16(int layer, int32_t block, int slot) const {
    return At<uint16_t>(keys_.get(), layer, block, slot);
  }
  const uint16_t* ValueBf16(int layer, int32_t block, int slot) const {
    return At<uint16_t>(values_.get(), layer, block, slot);
  }

 private:
  template <class T>
  T* At(unsigned char* base, int layer, int32_t block, int slot) const {
    return reinterpret_cast<T*>(base) + Offset(layer, block, slot);
  }
  int64_t Offset(int layer, int32_t block, int slot) const {
    return ((static_cast<int64_t>(layer) * shape_.num_blocks + block) * shape_.block_size + slot) * row_;
  }
  KvCacheShape shape_;
  int64_t row_;  // elements per token slot
  std::unique_ptr<unsigned char[]> keys_;
  std::unique_ptr<unsigned char[]> values_;
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_KV_CACHE_H_
