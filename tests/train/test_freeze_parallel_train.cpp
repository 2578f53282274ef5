// train.freeze under every parallel axis against the one-process frozen run: dp 2 at ZeRO 2
// (frozen tensors have no bucket, shard, staging or reduction; ZeRO 1 shards the same way and
// is left out for CI time), tp 2 (patterns match the full names of slices) and pp 2 with tied
// embeddings (each stage freezes its own part, the frozen embedding's two copies are not
// exchanged). Compared: per-step losses and gradient norms
// (frozen tensors are in neither run's norm) within 1e-4 relative, with clipping active, the
// trained weights within 1e-4, and the frozen ones bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tests/train/consolidated_weights.h"
#include "tests/train/freeze_checks.h"
#include "tests/train/train_sandbox.h"

namespace {

// The number after `key` in `text` (at `from` or later), e.g. "weights 243952 B".
int64_t number_after(const std::string& text, const std::string& key, size_t from = 0) {
  const size_t at = text.find(key, from);
  EXPECT_NE(at, std::string::npos) << key << " not in " << text;
  return at == std::string::npos ? -1 : std::stoll(text.substr(at + key.size()));
}

struct FreezeParallelTrain : hydra::test::SandboxTest<FreezeParallelTrain> {
  static constexpr const char* kTag = "hydra_freeze_parallel_train";
  static constexpr int kSteps = 4;

  static std::vector<std::string> patterns() { return {"embed.weight", "blocks.0.layers.1.*", "*.mlp_norm.weight"}; }
  // Two macro-blocks, so that pp 2 has one each; clip 0.5 is below the gradient norms.
  static std::vector<std::string> sets() {
    return {"model.macro_blocks=2", "model.tie_embeddings=true", "train.clip=0.5",
            "train.freeze=[embed.weight, blocks.0.layers.1.*, '*.mlp_norm.weight']"};
  }

  // `hydra info`'s memory estimate for the frozen layout (train/memory_estimate.h) against what
  // the run's rank 0 holds, as its optimizer logs it (parallel/zero_optimizer.h: the trainable
  // parameters, their gradients with the flat buffers, the AdamW state): the same optimizer
  // state, the same fp32 gradient buffers (the estimate leaves out the compute-dtype .grad, not
  // alive at the peak), and weights for the frozen parameters too. (Without train.freeze in the
  // estimate, it counted their optimizer state and gradients: 13 and 4+ bytes a frozen element.)
  static void expect_info_predicts_the_state(const std::string& output, const std::vector<std::string>& sets) {
    std::vector<std::string> args = {"info", "--config", (root() / "run.yaml").string(), "--json"};
    for (const auto& s : sets) args.insert(args.end(), {"--set", s});
    const auto info = hydra::test::run_hydra(args, (root() / "info_dp2.log").string(),
                                             hydra::test::TrainSandbox::mpirun_prefix(2));
    ASSERT_EQ(info.exit_code, 0) << info.output;
    const size_t stage = info.output.find("\"stages\"");
    const int64_t weights = number_after(info.output, "\"weights\": ", stage);
    const int64_t gradients = number_after(info.output, "\"gradients\": ", stage);
    const int64_t optimizer = number_after(info.output, "\"optimizer\": ", stage);
    const size_t line = output.find("memory: rank 0, zero stage 2 over 2 dp ranks");
    ASSERT_NE(line, std::string::npos) << output;
    // "parameters: N trainable (... in T tensors), M frozen (...)"
    const size_t counts = output.find("parameters: ");
    const int64_t trainable = number_after(output, "parameters: ");
    const int64_t frozen_elements = number_after(output, " tensors), ", counts);
    EXPECT_EQ(optimizer, number_after(output, "optimizer ", line));
    EXPECT_EQ(gradients, number_after(output, "gradients ", line) - 4 * trainable);
    EXPECT_EQ(weights, number_after(output, "weights ", line) + 4 * frozen_elements);
    EXPECT_GT(frozen_elements, 256 * 32) << "the embedding at least";
  }
};

TEST_F(FreezeParallelTrain, Dp2Tp2Pp2EqualTheOneProcessFrozenRun) {
  const auto ref = sandbox()->train("ref", 0, sets());
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const auto want = sandbox()->loss_and_grad_norm("ref");
  ASSERT_EQ(want.size(), static_cast<size_t>(kSteps));
  EXPECT_GT(want.begin()->second.second, 0.5) << "the reference must clip for the test to mean something";
  const std::vector<std::pair<std::string, std::vector<std::string>>> layouts = {
      {"dp2_zero2", {"parallel.zero_stage=2"}},
      {"tp2", {"parallel.tp=2"}},
      {"pp2", {"parallel.pp=2"}},
  };
  for (const auto& [name, layout] : layouts) {
    std::vector<std::string> all = sets();
    all.insert(all.end(), layout.begin(), layout.end());
    const auto run = sandbox()->train(name, 2, all);
    ASSERT_EQ(run.exit_code, 0) << run.output;
    const auto got = sandbox()->loss_and_grad_norm(name);
    ASSERT_EQ(got.size(), want.size()) << name;
    for (const auto& [step, v] : want) {
      EXPECT_NEAR(got.at(step).first, v.first, 1e-4 * std::abs(v.first)) << name << " loss at step " << step;
      EXPECT_NEAR(got.at(step).second, v.second, 1e-4 * std::abs(v.second)) << name << " grad_norm at step " << step;
    }
    hydra::test::expect_same_consolidated(root(), name, "ref", "step_00000004");
    const int frozen = hydra::test::expect_frozen_unchanged((root() / name / "weights.h5").string(),
                                                            (root() / "ref" / "weights.h5").string(), patterns(), false);
    EXPECT_GT(frozen, 1 + 2 * 4) << name << ": embed.weight, layer 1's tensors, the 8 MLP norms";
    if (name == "dp2_zero2") expect_info_predicts_the_state(run.output, all);
  }
}

// A pipeline stage with nothing left to train would hold no optimizer state: refused at start.
TEST_F(FreezeParallelTrain, Pp2StageWithNothingToTrainIsRefused) {
  const auto run = sandbox()->train("empty_stage", 2,
                                    {"model.macro_blocks=2", "parallel.pp=2", "train.freeze=[embed.*, blocks.0.*]"});
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_NE(run.output.find("train.freeze freezes every parameter of pipeline stage 0"), std::string::npos)
      << run.output;
}

}  // namespace
