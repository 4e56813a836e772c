// The fork/join pool: every index of a parallel loop runs exactly once, on a valid thread
// index, for loop sizes around the chunking's edges; regions are counted; pinning is harmless.
// ForRowRanges (row_ranges.h): inline up to one chunk of work, split in whole chunks above.
#include "engine/kernels/cpu/row_ranges.h"
#include "engine/kernels/cpu/thread_pool.h"

#include <atomic>
#include <cstdlib>
#include <vector>

#include "gtest/gtest.h"

namespace moeserve {
namespace {

// Also checks that no chunk but the one ending the loop is shorter than `min_chunk`.
void ExpectEachIndexOnce(ThreadPool& pool, int64_t n, int64_t min_chunk = 1) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  std::atomic<bool> bad_range{false}, bad_thread{false}, short_chunk{false};
  pool.ParallelForIndexed(
      n,
      [&](int thread, int64_t begin, int64_t end) {
        if (begin >= end || begin < 0 || end > n) bad_range = true;
        if (thread < 0 || thread >= pool.num_threads()) bad_thread = true;
        if (end - begin < min_chunk && end != n) short_chunk = true;
        for (int64_t i = begin; i < end && i < n; ++i) hits[i].fetch_add(1);
      },
      min_chunk);
  EXPECT_FALSE(bad_range) << "n=" << n;
  EXPECT_FALSE(bad_thread) << "n=" << n;
  EXPECT_FALSE(short_chunk) << "n=" << n << " min_chunk=" << min_chunk;
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
}

TEST(ThreadPool, EveryIndexRunsExactlyOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 3, 4, 7, 8, 9, 16, 48, 100, 4591}) ExpectEachIndexOnce(pool, n);
  }
}

TEST(ThreadPool, ChunksAreNoSmallerThanTheMinimumExceptTheLast) {
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {5, 12, 48, 49, 100}) {
      for (int64_t min_chunk : {1, 4, 12, 200}) ExpectEachIndexOnce(pool, n, min_chunk);
    }
  }
}

TEST(ThreadPool, CountsRegionsThatForkAndSplitsWork) {
  ThreadPool pool(2);
  const ThreadPool::Stats before = pool.stats();
  std::atomic<int> calls{0};
  for (int r = 0; r < 10; ++r) pool.ParallelFor(1000, [&](int64_t, int64_t) { calls.fetch_add(1); });
  pool.ParallelFor(1, [&](int64_t, int64_t) {});  // one unit: run inline, no region
  EXPECT_EQ(pool.stats().regions - before.regions, 10);
  // Guided chunks: more than one per thread (the tail is cut finer), far fewer than the units.
  EXPECT_GT(calls.load(), 10 * 2);
  EXPECT_LT(calls.load(), 10 * 100);
}

TEST(RowRanges, FewRowsRunInlineAndManyAreSplitInChunksOfTheMinimumWork) {
  ThreadPool pool(2);
  for (const int64_t row_elements : {64, 768, 5000}) {
    const int64_t min_rows = (kMinElementsPerChunk + row_elements - 1) / row_elements;
    for (const int64_t rows : {int64_t{0}, int64_t{1}, min_rows, min_rows + 1, 4 * min_rows + 3}) {
      const ThreadPool::Stats before = pool.stats();
      std::vector<std::atomic<int>> hits(static_cast<size_t>(rows));
      std::atomic<int> ranges{0};
      std::atomic<bool> short_range{false};
      ForRowRanges(&pool, rows, row_elements, [&](int64_t begin, int64_t end) {
        ranges.fetch_add(1);
        if (end - begin < min_rows && end != rows) short_range = true;
        for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
      });
      for (int64_t i = 0; i < rows; ++i) ASSERT_EQ(hits[i].load(), 1) << rows << " rows, row " << i;
      EXPECT_FALSE(short_range) << rows << " rows of " << row_elements;
      // Up to one chunk's work: inline, without a parallel region; more: split.
      const bool split = rows > min_rows;
      EXPECT_EQ(pool.stats().regions - before.regions, split ? 1 : 0) << rows << " rows of " << row_elements;
      EXPECT_EQ(ranges.load() > 1, split) << rows << " rows of " << row_elements;
    }
  }
  // Without a pool: one range over everything.
  int calls = 0;
  ForRowRanges(nullptr, 1000, 768, [&](int64_t begin, int64_t end) {
    ++calls;
    EXPECT_EQ(begin, 0);
    EXPECT_EQ(end, 1000);
  });
  EXPECT_EQ(calls, 1);
}

TEST(ThreadPool, PinnedThreadsStillCoverTheLoop) {
  setenv("MOESERVE_PIN_THREADS", "1", 1);
  ThreadPool pool(3);  // more threads than a small CI machine has CPUs: pins wrap around
  unsetenv("MOESERVE_PIN_THREADS");
  for (int64_t n : {1, 5, 64, 1000}) ExpectEachIndexOnce(pool, n);
}

}  // namespace
}  // namespace moeserve
