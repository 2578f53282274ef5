// hydra diagnose's compression section (train/diagnose.h, compression_sweep): which values of
// CCQA's C it trains, against the layout rules of docs/MODEL.md ("Layout") worked out by hand.
#include <gtest/gtest.h>

#include <vector>

#include "model/config.h"
#include "train/diagnose.h"

namespace {

hydra::model::ModelConfig ccqa_model(int dim, int heads, int kv_heads, const char* compress, int C) {
  hydra::model::ModelConfig c;
  c.dim = dim;
  c.heads = heads;
  c.kv_heads = kv_heads;
  c.macro_blocks = 1;
  c.vocab_size = 256;
  c.ccqa.compress = compress;
  c.ccqa.compression = C;
  return c;
}

using Sweep = std::vector<int>;

// The configured C, half and double it, where the layout takes them.
TEST(CompressionSweep, HalfAndDoubleWhereTheyAreValid) {
  EXPECT_EQ(hydra::train::compression_sweep(ccqa_model(768, 12, 3, "head_dim", 4)), (Sweep{4, 2, 8}));  // d 64
  EXPECT_EQ(hydra::train::compression_sweep(ccqa_model(2048, 16, 4, "heads", 4)), (Sweep{4, 2, 8}));    // 1b
  EXPECT_EQ(hydra::train::compression_sweep(ccqa_model(64, 4, 2, "head_dim", 4)), (Sweep{4, 2, 8}));    // tiny
}

// small under heads: C must divide its 12 heads, so 8 gives way to 6 (5 and 7 do not divide).
// Before, the section ran C 2, 4, 8 whatever the layout, and C 8 here was a run with an error.
TEST(CompressionSweep, NearestValidOnEachSide) {
  EXPECT_EQ(hydra::train::compression_sweep(ccqa_model(768, 12, 3, "heads", 4)), (Sweep{4, 2, 6}));
  // C 3 configured (12 heads): half rounds down to 1, below the range, so the side's only valid
  // C, 2; double is 6.
  EXPECT_EQ(hydra::train::compression_sweep(ccqa_model(768, 12, 3, "heads", 3)), (Sweep{3, 2, 6}));
  // C 2 configured: nothing below it in 2..8; double is 4 (d 16: d_h 4).
  EXPECT_EQ(hydra::train::compression_sweep(ccqa_model(64, 4, 2, "head_dim", 2)), (Sweep{2, 4}));
}

}  // namespace
