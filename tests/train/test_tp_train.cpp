// Tensor parallelism end to end: `mpirun -np 2 hydra train --set parallel.tp=2` trains what
// one process trains (the sandbox model: MQA, CCQA with one KV head, i.e. the replicated-KV
// path, MLA; MoD and MoR on), tied and untied. Compared: the per-step losses of the metrics
// file and the global gradient norms (split parameters summed over tp, replicated ones once),
// within 1e-4 relative, with clipping active (train.clip below the norms). Also tp2 x dp2
// with ZeRO 1 on 4 ranks.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/train/train_sandbox.h"

namespace {

struct TpTrain : ::testing::Test {
  static void SetUpTestSuite() {
    sandbox() = std::make_unique<hydra::test::TrainSandbox>("hydra_tp_train", 5);
    ASSERT_EQ(sandbox()->prepare_run().exit_code, 0) << sandbox()->prepare_run().output;
  }
  static void TearDownTestSuite() { sandbox().reset(); }
  static std::unique_ptr<hydra::test::TrainSandbox>& sandbox() {
    static std::unique_ptr<hydra::test::TrainSandbox> box;
    return box;
  }
  // step -> {loss, grad_norm}.
  static std::map<int, std::pair<double, double>> curve(const std::string& name) {
    std::map<int, std::pair<double, double>> out;
    for (const auto& [step, row] : sandbox()->metrics_rows(name)) {
      out[step] = {hydra::test::TrainSandbox::loss_of(row), std::stod(row.substr(row.find("\"grad_norm\": ") + 13))};
    }
    return out;
  }

  // `np` ranks with `layout` settings against one process, same global batch.
  static void expect_equals_one_process(const std::string& tag, bool tied, int np, const std::vector<std::string>& layout) {
    // clip 0.5 is below this model's gradient norms: clipping (and so the norm) matters.
    const std::vector<std::string> sets = {"train.clip=0.5", std::string("model.tie_embeddings=") + (tied ? "true" : "false")};
    const auto one = sandbox()->train(tag + "_ref", 0, sets);
    ASSERT_EQ(one.exit_code, 0) << one.output;
    std::vector<std::string> par_sets = sets;
    par_sets.insert(par_sets.end(), layout.begin(), layout.end());
    const auto par = sandbox()->train(tag, np, par_sets);
    ASSERT_EQ(par.exit_code, 0) << par.output;
    const auto want = curve(tag + "_ref");
    const auto got = curve(tag);
    ASSERT_EQ(want.size(), 5u);
    ASSERT_EQ(got.size(), 5u);
    for (const auto& [step, v] : want) {
      EXPECT_NEAR(got.at(step).first, v.first, 1e-4 * std::abs(v.first)) << tag << " loss at step " << step;
      EXPECT_NEAR(got.at(step).second, v.second, 1e-4 * std::abs(v.second)) << tag << " grad_norm at step " << step;
    }
    EXPECT_GT(want.begin()->second.second, 0.5) << "the reference must clip for the test to mean something";
  }
};

TEST_F(TpTrain, UntiedTp2EqualsOneProcess) { expect_equals_one_process("untied_tp2", false, 2, {"parallel.tp=2"}); }
TEST_F(TpTrain, TiedTp2EqualsOneProcess) { expect_equals_one_process("tied_tp2", true, 2, {"parallel.tp=2"}); }
TEST_F(TpTrain, Tp2Dp2Zero1EqualsOneProcess) {
  expect_equals_one_process("tp2_dp2_zero1", false, 4, {"parallel.tp=2", "parallel.zero_stage=1"});
}

}  // namespace
