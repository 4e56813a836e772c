#include "scheduler/block_allocator.h"

namespace moeserve {

BlockAllocator::BlockAllocator(int64_t num_blocks) : num_blocks_(num_blocks) {
  free_.reserve(num_blocks);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

bool BlockAllocator::Allocate(int64_t n, std::vector<int32_t>& table) {
  if (n > num_free()) return false;
  for (int64_t i = 0; i < n; ++i) {
    table.push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void BlockAllocator::Free(std::vector<int32_t>& table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) free_.push_back(*it);
  table.clear();
}

}  // namespace moeserve
