// PartAssembler against direct slicing: a [10, 6] tensor stored as two column slices (dim 1,
// as a row-parallel weight) each cut into uneven flat ranges (ZeRO pieces) is reassembled as
// four row slices (dim 0) of a tensor padded to 12 rows, each asked for a flat range; the
// result equals slicing the padded tensor directly, padding rows zero; the same from only the
// sub-ranges PartAssembler::needed asks for (what a load reads). A missing piece is
// reported, never filled with zeros.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "checkpoint/regions.h"

namespace {

using hydra::checkpoint::FlatPart;
using hydra::checkpoint::PartAssembler;

struct Stored {
  FlatPart part;
  at::Tensor data;
};

// Two column slices of `whole`, each cut at flat positions `cuts` of its 30 elements.
std::vector<Stored> store(const at::Tensor& whole, const std::vector<int64_t>& cuts) {
  std::vector<Stored> out;
  for (int64_t s = 0; s < 2; ++s) {
    const at::Tensor slice = whole.narrow(1, 3 * s, 3).contiguous().view({-1});
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      out.push_back({{{0, 3 * s}, {10, 3}, cuts[i], cuts[i + 1]}, slice.narrow(0, cuts[i], cuts[i + 1] - cuts[i]).clone()});
    }
  }
  return out;
}

TEST(Regions, ColumnSlicesInZeroPiecesReassembleAsPaddedRowSlices) {
  at::manual_seed(0);
  const at::Tensor whole = at::randn({10, 6});
  const at::Tensor padded = at::cat({whole, at::zeros({2, 6})});
  const std::vector<Stored> stored = store(whole, {0, 7, 8, 30});
  for (int64_t r = 0; r < 4; ++r) {          // row slices of 3 rows: the last is rows 9..11
    for (auto [begin, end] : std::vector<std::pair<int64_t, int64_t>>{{0, 18}, {4, 13}, {17, 18}}) {
      PartAssembler assembler({{3 * r, 0}, {3, 6}, begin, end}, {10, 6}, 1, at::kFloat);
      int read = 0;
      for (const auto& s : stored) {
        if (!assembler.overlaps(s.part)) continue;
        assembler.add(s.part, {s.data});
        ++read;
      }
      const bool padding_only = 3 * r * 6 + begin >= 60;
      EXPECT_EQ(read > 0, !padding_only) << "slice " << r << " [" << begin << ", " << end << ")";
      ASSERT_EQ(assembler.missing(), 0) << "slice " << r << " [" << begin << ", " << end << ")";
      const at::Tensor expect = padded.narrow(0, 3 * r, 3).contiguous().view({-1}).narrow(0, begin, end - begin);
      EXPECT_TRUE(at::equal(assembler.result(0), expect)) << "slice " << r << " [" << begin << ", " << end << ")";
    }
  }
}

// The same targets filled from only the sub-ranges needed() asks for (what a load reads):
// the same values, fewer elements, and every sub-range within its part.
TEST(Regions, NeededSubRangesAssembleTheSameFromLess) {
  at::manual_seed(0);
  const at::Tensor whole = at::randn({10, 6});
  const at::Tensor padded = at::cat({whole, at::zeros({2, 6})});
  // Column slices cut into ZeRO pieces, and row slices (split along dim 0) cut likewise.
  std::vector<Stored> stored = store(whole, {0, 7, 8, 30});
  for (int64_t s = 0; s < 2; ++s) {
    const at::Tensor rows = whole.narrow(0, 5 * s, 5).contiguous().view({-1});
    stored.push_back({{{5 * s, 0}, {5, 6}, 0, 11}, rows.narrow(0, 0, 11).clone()});
    stored.push_back({{{5 * s, 0}, {5, 6}, 11, 30}, rows.narrow(0, 11, 19).clone()});
  }
  int64_t read = 0, total = 0;
  for (int64_t r = 0; r < 4; ++r) {
    for (auto [begin, end] : std::vector<std::pair<int64_t, int64_t>>{{0, 18}, {4, 13}, {17, 18}}) {
      PartAssembler assembler({{3 * r, 0}, {3, 6}, begin, end}, {10, 6}, 1, at::kFloat);
      for (const auto& s : stored) {
        const FlatPart sub = assembler.needed(s.part);
        ASSERT_LE(s.part.begin, sub.begin);
        ASSERT_LE(sub.begin, sub.end);
        ASSERT_LE(sub.end, s.part.end);
        EXPECT_EQ(sub.end > sub.begin, assembler.overlaps(s.part));
        total += s.part.end - s.part.begin;
        if (sub.end == sub.begin) continue;
        read += sub.end - sub.begin;
        assembler.add(sub, {s.data.narrow(0, sub.begin - s.part.begin, sub.end - sub.begin)});
      }
      ASSERT_EQ(assembler.missing(), 0) << "slice " << r << " [" << begin << ", " << end << ")";
      const at::Tensor expect = padded.narrow(0, 3 * r, 3).contiguous().view({-1}).narrow(0, begin, end - begin);
      EXPECT_TRUE(at::equal(assembler.result(0), expect)) << "slice " << r << " [" << begin << ", " << end << ")";
    }
  }
  EXPECT_LT(read, total / 2);
}

// A part covering exactly the target's rows needs all of itself; one of 0-dim needs its one
// element.
TEST(Regions, NeededOfWholePartsAndScalars) {
  PartAssembler rows({{2, 0}, {3, 6}, 0, 18}, {10, 6}, 1, at::kFloat);
  const FlatPart same = rows.needed({{2, 0}, {3, 6}, 0, 18});
  EXPECT_EQ(same.begin, 0);
  EXPECT_EQ(same.end, 18);
  const FlatPart larger = rows.needed({{0, 0}, {10, 6}, 0, 60});
  EXPECT_EQ(larger.begin, 12);  // rows 2..4 of the whole
  EXPECT_EQ(larger.end, 30);
  PartAssembler scalar({{}, {}, 0, 1}, {}, 1, at::kFloat);
  const FlatPart one = scalar.needed({{}, {}, 0, 1});
  EXPECT_EQ(one.begin, 0);
  EXPECT_EQ(one.end, 1);
  scalar.add(one, {at::full({1}, 2.5f)});
  EXPECT_EQ(scalar.missing(), 0);
  EXPECT_EQ(scalar.result(0).item<float>(), 2.5f);
}

TEST(Regions, RowsOutsideTheTargetAreNotRead) {
  const at::Tensor whole = at::arange(60, at::kFloat).view({10, 6});
  const std::vector<Stored> stored = store(whole, {0, 15, 30});  // rows 0-4 and 5-9 of each column slice
  PartAssembler assembler({{0, 0}, {3, 6}, 0, 18}, {10, 6}, 1, at::kFloat);
  int read = 0;
  for (const auto& s : stored) read += assembler.overlaps(s.part);
  EXPECT_EQ(read, 2);  // only the pieces of rows 0-4
}

TEST(Regions, AMissingPieceIsReported) {
  at::manual_seed(1);
  const at::Tensor whole = at::randn({10, 6});
  std::vector<Stored> stored = store(whole, {0, 7, 8, 30});
  stored.erase(stored.begin() + 1);  // elements 7..8 of the first column slice: row 2, column 1
  PartAssembler assembler({{0, 0}, {10, 6}, 0, 60}, {10, 6}, 1, at::kFloat);
  for (const auto& s : stored) assembler.add(s.part, {s.data});
  EXPECT_EQ(assembler.missing(), 1);
}

}  // namespace
