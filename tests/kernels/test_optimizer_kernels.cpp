// The fused optimizer kernels (kernels/optimizer_update.cu) through parallel/: the gradient
// norm's sum of squares against a float64 sum on the host (and bitwise repeatable), and
// AdamW on CUDA (one kernel) against the ATen formulas of parallel/adamw.cpp on the CPU over
// several steps with clipping and a skipped step, which must leave the state bitwise.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

#include "parallel/adamw.h"
#include "parallel/flat_layout.h"
#include "parallel/optimizer_kernels.h"
#include "parallel/step_gate.h"
#include "tests/kernels/event_timing.h"
#include <ATen/cuda/CUDAContext.h>

namespace {

using namespace hydra::parallel;

TEST(OptimizerKernels, SumOfSquaresMatchesFloat64AndRepeats) {
  at::manual_seed(1);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t count : std::vector<int64_t>{1, 3, 4, 9, 1001, (int64_t{1} << 20) + 5}) {
      for (bool misaligned : {false, true}) {
        const at::Tensor host = at::randn({count + 1}).to(dtype).narrow(0, misaligned ? 1 : 0, count);
        const at::Tensor dev = host.cuda();  // a contiguous copy: misaligned needs a view on the device
        const at::Tensor x = misaligned ? at::cat({at::zeros({1}, dev.options()), dev}).narrow(0, 1, count) : dev;
        const at::Tensor a = fused_sum_of_squares({x}), b = fused_sum_of_squares({x});
        ASSERT_TRUE(a.defined());
        const double ref = host.to(at::kDouble).pow(2).sum().item<double>();
        EXPECT_NEAR(a.item<double>(), ref, 1e-12 * ref) << dtype << " " << count << (misaligned ? " misaligned" : "");
        EXPECT_TRUE(at::equal(a, b)) << count << ": not repeatable";
      }
    }
  }
  EXPECT_FALSE(fused_sum_of_squares({at::randn({8})}).defined()) << "CPU tensors keep the ATen path";
  EXPECT_FALSE(fused_sum_of_squares({}).defined());
}

// The gradient norm over a model's .grad: many tensors of both dtypes in one call.
TEST(OptimizerKernels, SumOfSquaresOverManyTensors) {
  at::manual_seed(3);
  std::vector<at::Tensor> xs;
  double ref = 0;
  for (int i = 0; i < 40; ++i) {
    const at::Tensor host = at::randn({1 + 997 * i}).to(i % 3 == 0 ? at::kFloat : at::kBFloat16);
    ref += host.to(at::kDouble).pow(2).sum().item<double>();
    xs.push_back(host.cuda());
  }
  const at::Tensor a = fused_sum_of_squares(xs);
  ASSERT_TRUE(a.defined());
  EXPECT_NEAR(a.item<double>(), ref, 1e-12 * ref);
  xs.push_back(at::randn({8}));  // one CPU tensor: the whole list keeps the ATen path
  EXPECT_FALSE(fused_sum_of_squares(xs).defined());
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

// One rank (parallel/zero_optimizer.h, direct): AdamW straight from the parameters' .grad into
// the parameters, in one pass, against gather + the flat kernel + scatter on a copy: bitwise
// equal, for bf16 and fp32 parameters, a parameter without a gradient, sizes that cross the
// kernel's chunks and more parameters than one launch takes, a clipped and a skipped step.
TEST(OptimizerKernels, AdamWOnTheParametersEqualsGatherUpdateScatter) {
  at::manual_seed(4);
  NamedParams fused, staged;
  for (int i = 0; i < 60; ++i) {
    const int64_t n = i == 0 ? 20000 : 1 + 37 * i;
    const at::Tensor v = at::randn({n}, at::kCUDA).to(i % 4 == 0 ? at::kFloat : at::kBFloat16);
    fused.emplace_back("p" + std::to_string(i), v.clone());
    staged.emplace_back("p" + std::to_string(i), v.clone());
  }
  FlatLayout layout = make_flat_layout(fused);
  for (size_t i = 0; i < layout.slots.size(); ++i) layout.slots[i].decay = i % 3 != 0;
  AdamWState a = make_adamw_state(layout, fused, {0, layout.numel});
  AdamWState b = make_adamw_state(layout, staged, {0, layout.numel});
  const AdamWHyper h{at::scalar_tensor(3e-3, at::kDouble), 0.9, 0.95, 1e-8, 0.1};
  for (int step = 0; step < 4; ++step) {
    for (size_t i = 0; i < fused.size(); ++i) {
      at::Tensor g;
      if (i != 5) g = (at::randn_like(fused[i].second.to(at::kFloat)) * (step == 1 ? 10.0 : 1.0)).to(fused[i].second.scalar_type());
      fused[i].second.mutable_grad() = g;
      staged[i].second.mutable_grad() = g.defined() ? g.clone() : g;
    }
    const at::Tensor loss = at::full({}, step == 2 ? std::nan("") : 2.5, at::TensorOptions(at::kCUDA).dtype(at::kDouble));
    const at::Tensor norm = at::full({}, 40.0, loss.options());
    const AdamWUpdate u = plan_adamw_update(a.step, h, make_step_gate(loss, norm, 1.0), a.master.options());
    ASSERT_TRUE(fused_adamw_params(a, layout, fused, h, u));
    a.step.add_(u.apply);
    at::Tensor grad = at::empty({layout.numel}, b.master.options());
    gather_flat(layout, staged, {0, layout.numel}, Source::kGrad, grad);
    adamw_apply(b, grad, h, u);
    scatter_flat(layout, staged, {0, layout.numel}, b.master);
    EXPECT_TRUE(at::equal(a.master, b.master)) << "step " << step;
    EXPECT_TRUE(at::equal(a.exp_avg, b.exp_avg)) << "step " << step;
    EXPECT_TRUE(at::equal(a.exp_avg_sq, b.exp_avg_sq)) << "step " << step;
    for (size_t i = 0; i < fused.size(); ++i) {
      EXPECT_TRUE(at::equal(fused[i].second, staged[i].second)) << fused[i].first << " step " << step;
    }
  }
  // The CPU keeps the staged path.
  NamedParams host = {{"w", at::randn({8})}};
  const FlatLayout host_layout = make_flat_layout(host);
  AdamWState hs = make_adamw_state(host_layout, host, {0, 8});
  EXPECT_FALSE(fused_adamw_params(hs, host_layout, host, h, plan_adamw_update(hs.step, h, always_apply(hs.master.options()), hs.master.options())));
}

// Timing (not a check): the one-rank AdamW over `1b`'s parameter shapes (bf16 parameters, 1.46B
// elements) and the gradient norm's sum of squares over the same gradients; prints GB/s at
// 28 bytes an element moved (gradient 2, master 8, moments 16, value 2) and 2 for the norm.
TEST(OptimizerKernels, DISABLED_TimingOneB) {
  NamedParams params;
  const int64_t E = 2048, F = 7168, V = 50304;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    params.emplace_back(name, at::randn(shape, at::TensorOptions(at::kCUDA).dtype(at::kBFloat16)));
  };
  add("embed", {V, E});
  for (int l = 0; l < 24; ++l) {
    const std::string p = "l" + std::to_string(l) + ".";
    add(p + "norm1", {E});
    add(p + "wq", {E, E});
    add(p + "wkv", {512, E});
    add(p + "wo", {E, E});
    add(p + "norm2", {E});
    add(p + "w_gate_up", {2 * F, E});
    add(p + "w_down", {E, F});
  }
  add("head", {V, E});
  FlatLayout layout = make_flat_layout(params);
  for (size_t i = 0; i < layout.slots.size(); ++i) layout.slots[i].decay = params[i].second.dim() > 1;
  AdamWState a = make_adamw_state(layout, params, {0, layout.numel});
  std::vector<at::Tensor> grads;
  for (auto& [name, v] : params) {
    v.mutable_grad() = at::randn_like(v);
    grads.push_back(v.grad());
  }
  const AdamWHyper h{at::scalar_tensor(3e-3, at::kDouble), 0.9, 0.95, 1e-8, 0.1};
  const at::Tensor loss = at::full({}, 2.5, at::TensorOptions(at::kCUDA).dtype(at::kDouble));
  const at::Tensor norm = at::full({}, 1.0, loss.options());
  const AdamWUpdate u = plan_adamw_update(a.step, h, make_step_gate(loss, norm, 1.0), a.master.options());
  ASSERT_TRUE(fused_adamw_params(a, layout, params, h, u));
  const cudaStream_t st = at::cuda::getCurrentCUDAStream();
  const float adamw = hydra::test::median_event_ms([&] { fused_adamw_params(a, layout, params, h, u); }, 10, 2, st);
  const float squares = hydra::test::median_event_ms([&] { fused_sum_of_squares(grads); }, 10, 2, st);
  const double n = static_cast<double>(layout.numel);
  std::printf("TIMING adamw 1b-like (%.0fM elements): %.3f ms (%.0f GB/s at 28 B); sum of squares %.3f ms (%.0f GB/s)\n",
              n / 1e6, adamw, 28 * n / adamw / 1e6, squares, 2 * n / squares / 1e6);
}

}  // namespace
