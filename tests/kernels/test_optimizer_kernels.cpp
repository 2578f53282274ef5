// The fused optimizer kernels (kernels/optimizer_update.cu) through parallel/: the gradient
// norm's sum of squares against a float64 sum on the host (and bitwise repeatable), and
// AdamW on CUDA (one kernel) against the ATen formulas of parallel/adamw.cpp on the CPU over
// several steps with clipping and a skipped step, which must leave the state bitwise.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "parallel/adamw.h"
#include "parallel/optimizer_kernels.h"
#include "parallel/step_gate.h"

namespace {

using namespace hydra::parallel;

TEST(OptimizerKernels, SumOfSquaresMatchesFloat64AndRepeats) {
  at::manual_seed(1);
  for (int64_t count : std::vector<int64_t>{1, 3, 4, 1001, (int64_t{1} << 20) + 5}) {
    for (bool misaligned : {false, true}) {
      const at::Tensor host = at::randn({count + 1}).narrow(0, misaligned ? 1 : 0, count);
      const at::Tensor dev = host.cuda();  // a contiguous copy: misaligned needs a view on the device
      const at::Tensor x = misaligned ? at::cat({at::zeros({1}).cuda(), dev}).narrow(0, 1, count) : dev;
      const at::Tensor a = fused_sum_of_squares(x), b = fused_sum_of_squares(x);
      ASSERT_TRUE(a.defined());
      const double ref = host.to(at::kDouble).pow(2).sum().item<double>();
      EXPECT_NEAR(a.item<double>(), ref, 1e-12 * ref) << count << (misaligned ? " misaligned" : "");
      EXPECT_TRUE(at::equal(a, b)) << count << ": not repeatable";
    }
  }
  EXPECT_FALSE(fused_sum_of_squares(at::randn({8})).defined()) << "CPU tensors keep the ATen path";
}

AdamWState state_on(const at::Tensor& master, const at::Tensor& decay) {
  AdamWState s;
  s.range = {0, master.numel()};
  s.master = master.clone();
  s.exp_avg = at::zeros_like(master);
  s.exp_avg_sq = at::zeros_like(master);
  s.decay_mask = decay.clone();
  s.step = at::zeros({}, master.options().dtype(at::kDouble));
  return s;
}

TEST(OptimizerKernels, AdamWMatchesTheAtenFormulasAndSkipsBitwise) {
  at::manual_seed(2);
  const int64_t n = 100003;  // odd: the vector loop and the scalar tail
  const at::Tensor master = at::randn({n});
  const at::Tensor decay = (at::rand({n}) > 0.3).to(at::kByte);
  AdamWState cpu = state_on(master, decay), gpu = state_on(master.cuda(), decay.cuda());
  const AdamWHyper h{at::scalar_tensor(3e-3, at::kDouble), 0.9, 0.95, 1e-8, 0.1};
  for (int step = 0; step < 6; ++step) {
    at::Tensor grad = at::randn({n}) * (step == 2 ? 10.0 : 1.0);  // step 2 clips
    at::Tensor loss = at::full({}, step == 4 ? std::nan("") : 2.5, at::kDouble);  // step 4 is skipped
    const at::Tensor norm = grad.to(at::kDouble).norm();
    const at::Tensor m_before = gpu.exp_avg.clone(), v_before = gpu.exp_avg_sq.clone(), p_before = gpu.master.clone();
    adamw_step(cpu, grad, h, make_step_gate(loss, norm, 1.0));
    adamw_step(gpu, grad.cuda(), h, make_step_gate(loss.cuda(), norm.cuda(), 1.0));
    if (step == 4) {
      EXPECT_TRUE(at::equal(gpu.master, p_before)) << "a skipped step changed the weights";
      EXPECT_TRUE(at::equal(gpu.exp_avg, m_before));
      EXPECT_TRUE(at::equal(gpu.exp_avg_sq, v_before));
    }
    for (const auto& [a, b, what] : {std::tuple{gpu.master, cpu.master, "master"},
                                     std::tuple{gpu.exp_avg, cpu.exp_avg, "exp_avg"},
                                     std::tuple{gpu.exp_avg_sq, cpu.exp_avg_sq, "exp_avg_sq"}}) {
      const double err = (a.cpu().to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
      const double scale = b.to(at::kDouble).abs().max().item<double>();
      EXPECT_LE(err, 1e-6 * scale) << what << " after step " << step;
    }
    EXPECT_EQ(gpu.step.item<double>(), cpu.step.item<double>()) << step;
  }
  EXPECT_EQ(gpu.step.item<double>(), 5.0);  // six steps, one skipped
}

}  // namespace
