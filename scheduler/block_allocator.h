// Free list of KV cache block ids. Owned by the serving loop; not thread-safe.
#ifndef MOESERVE_SCHEDULER_BLOCK_ALLOCATOR_H_
#define MOESERVE_SCHEDULER_BLOCK_ALLOCATOR_H_

#include <cstdint>
#include <vector>

namespace moeserve {

class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks);

  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  double usage_ratio() const { return num_blocks_ == 0 ? 0.0 : 1.0 - double(num_free()) / num_blocks_; }

  // Appends `n` blocks to `table`; false (and no change) when fewer than n are free.
  bool Allocate(int64_t n, std::vector<int32_t>& table);
  // Returns every block of `table` and clears it.
  void Free(std::vector<int32_t>& table);

 private:
  int64_t num_blocks_;
  std::vector<int32_t> free_;  // a stack: recently freed blocks are reused first (warm in cache)
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_BLOCK_ALLOCATOR_H_
