// common/heap_reuse: after keep_freed_heap_for_reuse() a block of a few MB comes from the heap,
// not a mapping of its own, and freeing it leaves the heap as large as it was (nothing given
// back to the kernel, so the next step's tensors do not page-fault anew). Observed through
// mallinfo2(): hblks counts blocks with their own mapping, arena the heap's bytes. glibc's
// defaults fail both: the first 16 MiB block of a process is mapped apart, and with only the
// mmap threshold raised the heap is trimmed back past 128 KiB free (the settings are
// process-wide, so this test runs first in its own process).
#include <gtest/gtest.h>

#include <malloc.h>
#include <stdlib.h>

#include <cstring>

#include "common/heap_reuse.h"

namespace {

// Mapped blocks while a block of `bytes` is held.
size_t mapped_blocks_while_holding(size_t bytes) {
  void* p = std::malloc(bytes);
  std::memset(p, 1, bytes);
  asm volatile("" : : "r"(p) : "memory");  // the block escapes: the compiler may not drop the pair
  const size_t mapped = mallinfo2().hblks;
  std::free(p);
  return mapped;
}

TEST(HeapReuse, FreedBlocksOfAFewMegabytesStayInTheHeap) {
  ASSERT_EQ(::unsetenv("GLIBC_TUNABLES"), 0);
  ASSERT_TRUE(hydra::common::keep_freed_heap_for_reuse());
  const size_t mapped = mallinfo2().hblks;
  EXPECT_EQ(mapped_blocks_while_holding(16u << 20), mapped);
  const size_t arena = mallinfo2().arena;
  EXPECT_GE(arena, 16u << 20);  // the freed block is still the heap's
  EXPECT_EQ(mapped_blocks_while_holding(24u << 20), mapped);
  EXPECT_GE(mallinfo2().arena, arena + (8u << 20)) << "the heap grew by 8 MiB for the larger block and keeps it";
}

TEST(HeapReuse, LeavesAUsersMallocTunablesAlone) {
  ASSERT_EQ(::setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0", 1), 0);
  EXPECT_FALSE(hydra::common::keep_freed_heap_for_reuse());
  ASSERT_EQ(::setenv("GLIBC_TUNABLES", "glibc.rtld.nns=4", 1), 0);
  EXPECT_TRUE(hydra::common::keep_freed_heap_for_reuse());
  ASSERT_EQ(::unsetenv("GLIBC_TUNABLES"), 0);
}

}  // namespace
