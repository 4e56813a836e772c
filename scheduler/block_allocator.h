// KV cache block ids with reference counts, and the prefix cache over them. Owned by the
// serving loop; not thread-safe.
//
// A block is free, held (reference count > 0: in one or more sequences' tables) or cached and
// idle (held by nobody, its keys/values kept because a full block's content is known by its
// hash). Idle cached blocks count as free: Allocate takes them back, least recently released
// first, only when the free list runs short.
#ifndef MOESERVE_SCHEDULER_BLOCK_ALLOCATOR_H_
#define MOESERVE_SCHEDULER_BLOCK_ALLOCATOR_H_

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace moeserve {

class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks);

  int64_t num_blocks() const { return num_blocks_; }
  // Blocks an Allocate can take: free ones plus idle cached ones.
  int64_t num_free() const { return static_cast<int64_t>(free_.size() + idle_.size()); }
  double usage_ratio() const { return num_blocks_ == 0 ? 0.0 : 1.0 - double(num_free()) / num_blocks_; }

  // Appends `n` blocks to `table`, evicting idle cached blocks (least recently released first)
  // when the free list is short; false (and no change) when fewer than n are available.
  bool Allocate(int64_t n, std::vector<int32_t>& table);
  // Releases one reference to every block of `table` and clears it.
  void Free(std::vector<int32_t>& table);

  // Prefix cache. A block's content is the key (parent block's hash, the block's token ids),
  // looked up by its hash and then compared in full, so a hash collision can never hand out
  // another prefix's keys and values.
  // The cached block holding that content, with a reference taken for the caller; nullopt when
  // none.
  std::optional<int32_t> Acquire(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens);
  // `block` (held by the caller) now holds that full content; false when the content is
  // already cached in another block (this one then stays private).
  bool Publish(int32_t block, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens);

  int64_t cached_blocks() const { return static_cast<int64_t>(block_of_hash_.size()); }
  uint64_t evictions() const { return evictions_; }
  int32_t references(int32_t block) const { return refs_[block]; }

 private:
  void Release(int32_t block);
  void Evict(int32_t block);

  int64_t num_blocks_;
  std::vector<int32_t> free_;    // a stack: recently freed blocks are reused first (warm in cache)
  std::vector<int32_t> refs_;    // per block
  std::unordered_map<uint64_t, int32_t> block_of_hash_;
  std::vector<std::optional<uint64_t>> hash_of_block_;
  std::vector<uint64_t> parent_of_block_;             // the cached content, for the full comparison
  std::vector<std::vector<int32_t>> tokens_of_block_;
  std::list<int32_t> idle_;      // cached, unreferenced; front = released longest ago
  std::vector<std::list<int32_t>::iterator> idle_pos_;  // valid while the block is in idle_
  uint64_t evictions_ = 0;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_BLOCK_ALLOCATOR_H_
