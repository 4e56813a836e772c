#include "scheduler/block_allocator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace moeserve {

BlockAllocator::BlockAllocator(int64_t num_blocks)
    : num_blocks_(num_blocks),
      refs_(num_blocks, 0),
      hash_of_block_(num_blocks),
      parent_of_block_(num_blocks, 0),
      tokens_of_block_(num_blocks),
      idle_pos_(num_blocks) {
  free_.reserve(num_blocks);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

void BlockAllocator::Evict(int32_t block) {
  idle_.erase(idle_pos_[block]);
  block_of_hash_.erase(*hash_of_block_[block]);
  hash_of_block_[block].reset();
  free_.push_back(block);
  ++evictions_;
}

bool BlockAllocator::Allocate(int64_t n, std::vector<int32_t>& table) {
  if (n > num_free()) return false;
  while (static_cast<int64_t>(free_.size()) < n) Evict(idle_.front());
  for (int64_t i = 0; i < n; ++i) {
    const int32_t b = free_.back();
    free_.pop_back();
    refs_[b] = 1;
    table.push_back(b);
  }
  return true;
}

void BlockAllocator::Release(int32_t block) {
  MOESERVE_CHECK(refs_[block] > 0, absl::StrCat("KV block ", block, " released more often than taken"));
  if (--refs_[block] > 0) return;
  if (hash_of_block_[block].has_value()) {
    idle_pos_[block] = idle_.insert(idle_.end(), block);  // content kept until evicted
  } else {
    free_.push_back(block);
  }
}

void BlockAllocator::Free(std::vector<int32_t>& table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) Release(*it);
  table.clear();
}

std::optional<int32_t> BlockAllocator::Acquire(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens) {
  auto it = block_of_hash_.find(hash);
  if (it == block_of_hash_.end()) return std::nullopt;
  const int32_t b = it->second;
  const std::vector<int32_t>& cached = tokens_of_block_[b];
  if (parent_of_block_[b] != parent || !std::equal(cached.begin(), cached.end(), tokens.begin(), tokens.end())) {
    return std::nullopt;  // a hash collision: another content
  }
  if (refs_[b]++ == 0) idle_.erase(idle_pos_[b]);
  return b;
}

bool BlockAllocator::Publish(int32_t block, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens) {
  MOESERVE_CHECK(refs_[block] > 0, absl::StrCat("publishing KV block ", block, " that nobody holds"));
  if (hash_of_block_[block].has_value()) return *hash_of_block_[block] == hash;
  if (!block_of_hash_.emplace(hash, block).second) return false;
  hash_of_block_[block] = hash;
  parent_of_block_[block] = parent;
  tokens_of_block_[block].assign(tokens.begin(), tokens.end());
  return true;
}

}  // namespace moeserve
