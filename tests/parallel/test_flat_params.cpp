// Parameters and gradients as views of two flat buffers (parallel/flat_params.h): values kept,
// autograd accumulating in place, one-copy gather/scatter equal to the per-parameter path of
// unflattened copies, and what happens when a gradient is replaced behind the optimizer's back.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "parallel/flat_params.h"

namespace {

using namespace hydra::parallel;

NamedParams leaf_params() {
  at::manual_seed(3);
  NamedParams params = {{"a.weight", at::randn({4, 3})}, {"a.norm", at::randn({5})}, {"b.weight", at::randn({2, 7})}};
  for (auto& [name, p] : params) p.set_requires_grad(true);
  return params;
}

NamedParams detached_copies(const NamedParams& params) {
  NamedParams out;
  for (const auto& [name, p] : params) out.emplace_back(name, p.detach().clone().set_requires_grad(true));
  return out;
}

// A loss that touches every parameter differently.
at::Tensor loss_of(const NamedParams& params) {
  at::Tensor loss = at::zeros({});
  double k = 1.0;
  for (const auto& [name, p] : params) loss = loss + (p * p * k).sum() + p.sum(), k += 1.0;
  return loss;
}

TEST(FlatParams, KeepValuesAndAccumulateGradientsInPlace) {
  NamedParams flat = leaf_params();
  NamedParams plain = detached_copies(flat);
  const FlatLayout layout = make_flat_layout(flat);
  flatten_params(layout, flat);
  for (size_t i = 0; i < flat.size(); ++i) {
    EXPECT_TRUE(at::equal(flat[i].second, plain[i].second)) << flat[i].first;
    EXPECT_TRUE(at::equal(flat[i].second.grad(), at::zeros_like(plain[i].second))) << flat[i].first;
  }
  const at::Tensor grads = flat_span(layout, flat, {0, layout.numel}, Source::kGrad);
  ASSERT_TRUE(grads.defined());
  // Two backward passes (two micro-batches) accumulate into the views.
  for (int pass = 0; pass < 2; ++pass) {
    loss_of(flat).backward();
    loss_of(plain).backward();
  }
  for (size_t i = 0; i < flat.size(); ++i) {
    EXPECT_TRUE(at::allclose(flat[i].second.grad(), plain[i].second.grad(), 0, 0)) << flat[i].first;
  }
  // The flat buffer is what the parameters' .grad show.
  at::Tensor expected = at::cat({plain[0].second.grad().reshape(-1), plain[1].second.grad().reshape(-1),
                                 plain[2].second.grad().reshape(-1)});
  EXPECT_TRUE(at::equal(grads, expected));
  zero_flat_grads(layout, flat);
  EXPECT_EQ(grads.abs().sum().item<float>(), 0.0f);
  EXPECT_TRUE(flat_span(layout, flat, {0, layout.numel}, Source::kGrad).defined()) << "zeroing keeps the views";
}

TEST(FlatParams, GatherAndScatterEqualThePerParameterPath) {
  NamedParams flat = leaf_params();
  NamedParams plain = detached_copies(flat);
  const FlatLayout layout = make_flat_layout(flat);
  flatten_params(layout, flat);
  loss_of(flat).backward();
  loss_of(plain).backward();
  for (int parts : {1, 2, 3, 5}) {
    for (int i = 0; i < parts; ++i) {
      const Range r = shard_range(layout.numel, parts, i);
      ASSERT_TRUE(flat_span(layout, flat, r, Source::kGrad).defined()) << "range " << r.begin << ".." << r.end;
      for (Source what : {Source::kGrad, Source::kValue}) {
        at::Tensor a = at::empty({r.size()}), b = at::empty({r.size()});
        gather_flat(layout, flat, r, what, a);
        gather_flat(layout, plain, r, what, b);
        EXPECT_TRUE(at::equal(a, b)) << parts << " parts, part " << i;
      }
      const at::Tensor update = at::randn({r.size()});
      scatter_flat(layout, flat, r, update);
      scatter_flat(layout, plain, r, update);
    }
    for (size_t k = 0; k < flat.size(); ++k) EXPECT_TRUE(at::equal(flat[k].second, plain[k].second)) << parts;
  }
}

TEST(FlatParams, AReplacedGradientFallsBackAndZeroingRefuses) {
  NamedParams flat = leaf_params();
  NamedParams plain = detached_copies(flat);
  const FlatLayout layout = make_flat_layout(flat);
  flatten_params(layout, flat);
  flat[1].second.mutable_grad() = at::ones({5});  // no longer a view of the buffer
  plain[1].second.mutable_grad() = at::ones({5});
  EXPECT_FALSE(flat_span(layout, flat, {0, layout.numel}, Source::kGrad).defined());
  at::Tensor a = at::empty({layout.numel}), b = at::empty({layout.numel});
  gather_flat(layout, flat, {0, layout.numel}, Source::kGrad, a);  // per parameter: still right
  gather_flat(layout, plain, {0, layout.numel}, Source::kGrad, b);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_THROW(zero_flat_grads(layout, flat), std::exception);
}

}  // namespace
