// The main() of the test binaries hydra_test registers: GoogleTest's, after the heap setting the
// hydra executable makes first (common/heap_reuse.h), so that tests training in process run
// as the product does (ModelWhole.TinyOverfitsOneBatch: 18.5 s with glibc's defaults, 6.7 s
// with it). A binary that must see glibc's defaults links GTest::gtest_main instead
// (hydra_test's DEFAULT_HEAP).
#include <gtest/gtest.h>

#include "common/heap_reuse.h"

int main(int argc, char** argv) {
  hydra::common::keep_freed_heap_for_reuse();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
