// Final weights of two training runs compared through `hydra ckpt consolidate`: whatever
// layout wrote a checkpoint, its consolidated file holds whole tensors under their model
// names, so a parallel run and the one-process reference compare tensor by tensor.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/h5_file.h"
#include "tests/launcher/run_hydra.h"

namespace hydra::test {

// Consolidates <root>/<run>/ckpt/<step_dir> of both runs and expects every tensor of `name`
// within `rel` of `ref`'s in relative L2 (the training itself agrees to that order; an
// elementwise bound would be dominated by AdamW's m / sqrt(v) on near-zero gradients).
// Tensors that start at zero (temperatures, router biases) have a norm of a few learning-rate
// steps, too small to be relative to: their norm counts as at least 0.01 per element, half
// the init scale of the weights.
inline void expect_same_consolidated(const std::filesystem::path& root, const std::string& name, const std::string& ref,
                                     const std::string& step_dir, double rel = 1e-4) {
  std::vector<std::string> outputs;
  for (const std::string& run : {name, ref}) {
    const std::string out = (root / run / "weights.h5").string();
    const HydraRun joined =
        run_hydra({"ckpt", "consolidate", (root / run / "ckpt" / step_dir).string(), "--output", out}, out + ".log");
    ASSERT_EQ(joined.exit_code, 0) << joined.output;
    outputs.push_back(out);
  }
  const auto got = checkpoint::H5File::open_read(outputs[0]);
  const auto want = checkpoint::H5File::open_read(outputs[1]);
  const auto names = want.list("/model");
  ASSERT_GT(names.size(), 10u);
  ASSERT_EQ(got.list("/model"), names);
  for (const auto& n : names) {
    const at::Tensor a = got.read_tensor("/model/" + n), b = want.read_tensor("/model/" + n);
    ASSERT_EQ(a.sizes(), b.sizes()) << n;
    const double scale = std::max(b.norm().item<double>(), 0.01 * std::sqrt(static_cast<double>(b.numel())));
    EXPECT_LE((a - b).norm().item<double>(), rel * scale) << name << ": " << n;
  }
}

}  // namespace hydra::test
