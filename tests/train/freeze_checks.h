// What a frozen run must leave, read from consolidated weights files (`hydra ckpt consolidate`):
// every tensor train.freeze matched equal to the source's bit for bit, and the others trained.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "checkpoint/h5_file.h"
#include "train/frozen_params.h"

namespace hydra::test {

inline bool frozen_by(const std::vector<std::string>& patterns, const std::string& name) {
  for (const auto& p : patterns) {
    if (train::glob_matches(p, name)) return true;
  }
  return false;
}

// `tuned` and `source` are consolidated files of the same model. Returns the number of
// frozen tensors (each equal bit for bit); with `trained`, expects every trainable matrix to
// differ (AdamW moves each, if only by its weight decay).
inline int expect_frozen_unchanged(const std::string& tuned, const std::string& source,
                                   const std::vector<std::string>& patterns, bool trained = true) {
  const auto got = checkpoint::H5File::open_read(tuned);
  const auto want = checkpoint::H5File::open_read(source);
  const auto names = want.list("/model");
  EXPECT_EQ(got.list("/model"), names);
  int frozen = 0;
  for (const auto& n : names) {
    const at::Tensor a = got.read_tensor("/model/" + n), b = want.read_tensor("/model/" + n);
    if (frozen_by(patterns, n)) {
      EXPECT_TRUE(a.equal(b)) << n << " is frozen but changed";
      ++frozen;
    } else if (trained && b.dim() >= 2) {
      EXPECT_FALSE(a.equal(b)) << n << " trains but did not change";
    }
  }
  return frozen;
}

}  // namespace hydra::test
