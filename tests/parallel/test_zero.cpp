// The ZeRO optimizer (parallel/zero_optimizer.h) against a local reference: every rank knows
// every rank's gradient (a closed form of rank, element and step), so it can average them
// itself and run plain AdamW over the whole flat space. Small buckets (several per model, parts
// of uneven and zero size) exercise what the end-to-end tests (tests/train/test_zero_train.cpp,
// one bucket) cannot. Also: the memory report against its closed form, the collective
// non-finite norm, checkpoints of one stage and bucket plan loaded into another, and the
// data-parallel optimizer (parallel/data_parallel_optimizer.h): its overlap with backward
// and the orders it refuses.
//
// Usage: test_zero under mpirun with any number of ranks (all of them data-parallel).
// Only rank 0 prints gtest output; other ranks print their failures; every rank exits
// non-zero if any rank failed.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "common/errors.h"
#include "parallel/mpi_session.h"
#include "parallel/parallel_context.h"
#include "parallel/process_grid.h"
#include "parallel/data_parallel_optimizer.h"
#include "parallel/grad_norm.h"
#include "parallel/step_gate.h"
#include "parallel/zero_optimizer.h"
#include "tests/parallel/mpi_test_main.h"

namespace hydra::parallel {
namespace {

ParallelContext* g_ctx = nullptr;  // built by main() before RUN_ALL_TESTS

// Parameters of odd sizes; names decide weight decay (2-dim: yes, 1-dim and "router": no).
NamedParams make_params() {
  const std::vector<std::pair<std::string, std::vector<int64_t>>> spec = {
      {"embed", {7, 3}}, {"norm", {5}}, {"router.w", {4, 2}}, {"mlp.w", {11, 2}}, {"bias", {1}}, {"head", {13, 3}}};
  NamedParams params;
  int64_t k = 0;
  for (const auto& [name, shape] : spec) {
    at::Tensor p = at::empty(shape, at::kFloat);
    float* d = p.data_ptr<float>();
    for (int64_t i = 0; i < p.numel(); ++i, ++k) d[i] = 0.1f * static_cast<float>((k * 7) % 19) - 0.9f;
    params.emplace_back(name, p.requires_grad_(true));
  }
  return params;
}

// make_params() as a model's parameters (the data-parallel optimizer takes a model); a
// module's own parameter names hold no dots, so "router.w" is "router_w" here.
struct ParamModel : torch::nn::Module {
  ParamModel() {
    for (auto& [name, p] : make_params()) {
      std::string own = name;
      std::replace(own.begin(), own.end(), '.', '_');
      register_parameter(own, p);
    }
  }
  NamedParams params() const {
    NamedParams out;
    for (const auto& item : named_parameters()) out.emplace_back(item.key(), item.value());
    return out;
  }
};

DataParallelOptions dp_options(int stage, int64_t bucket, bool overlap, std::vector<std::string> deferred = {}) {
  DataParallelOptions o;
  o.zero_stage = stage;
  o.bucket_numel = bucket;
  o.overlap = overlap;
  o.deferred = std::move(deferred);
  return o;
}

double grad_value(int rank, int64_t flat_index, int step) {
  return 0.01 * static_cast<double>((rank * 13 + flat_index * 5 + step * 3) % 17) - 0.08;
}

// Sets every parameter's .grad to this rank's closed-form gradient of `step`.
void set_grads(const NamedParams& params, const FlatLayout& layout, int rank, int step) {
  for (size_t s = 0; s < params.size(); ++s) {
    at::Tensor g = at::empty_like(params[s].second.detach());
    float* d = g.data_ptr<float>();
    for (int64_t i = 0; i < g.numel(); ++i) d[i] = static_cast<float>(grad_value(rank, layout.slots[s].offset + i, step));
    params[s].second.mutable_grad() = g;
  }
}

// The dp-averaged flat gradient of `step`, computed locally.
at::Tensor average_grad(int64_t numel, int ranks, int step) {
  at::Tensor g = at::zeros({numel}, at::kDouble);
  double* d = g.data_ptr<double>();
  for (int r = 0; r < ranks; ++r)
    for (int64_t i = 0; i < numel; ++i) d[i] += grad_value(r, i, step) / ranks;
  return g.to(at::kFloat);
}

// The dp-averaged gradient this rank holds, in flat order over its owned ranges (zeros
// elsewhere): grad_shard's parts, or with one rank (direct) the parameters' .grad itself.
at::Tensor reduced_grad(const ZeroOptimizer& opt, const FlatLayout& layout, const NamedParams& params) {
  at::Tensor out = at::zeros({layout.numel}, at::kDouble);
  for (const ZeroBucket& b : opt.buckets) {
    at::Tensor part = at::empty({b.owned.size()}, opt.states.front().master.options());
    if (opt.direct) {
      gather_flat(layout, params, b.owned, Source::kGrad, part);
    } else {
      part.copy_(opt.grad_shard.narrow(0, b.local, b.owned.size()));
    }
    out.narrow(0, b.owned.begin, b.owned.size()).copy_(part);
  }
  return out;
}

const AdamWHyper kHyper{at::scalar_tensor(0.05, at::kDouble), 0.9, 0.95, 1e-8, 0.1};
constexpr double kClip = 0.1;  // below the gradient norm: clipping is exercised

struct Case {
  int stage;
  int64_t bucket_numel;
};

class ZeroStep : public ::testing::TestWithParam<Case> {};

TEST_P(ZeroStep, ThreeStepsEqualPlainAdamWOnTheAverage) {
  const Case c = GetParam();
  Communicator& dp = *g_ctx->dp;
  NamedParams params = make_params();
  const FlatLayout layout = make_flat_layout(params);
  ZeroOptimizer opt = make_zero_optimizer(layout, params, &dp, c.stage, c.bucket_numel);
  // Reference: one AdamW over everything on the locally averaged gradient.
  NamedParams ref_params = make_params();
  AdamWState ref = make_adamw_state(layout, ref_params, {0, layout.numel});
  for (int step = 0; step < 3; ++step) {
    set_grads(params, layout, dp.rank(), step);
    zero_reduce_gradients(opt, layout, params);
    const double norm = global_grad_norm(opt, layout, params);
    at::Tensor avg = average_grad(layout.numel, dp.size(), step);
    const double ref_norm = avg.norm().item<double>();
    EXPECT_NEAR(norm, ref_norm, 1e-6 * ref_norm) << "step " << step;
    const at::Tensor loss = at::zeros({});
    zero_step(opt, layout, params, kHyper, make_step_gate(loss, global_grad_norm_tensor(opt, layout, params), kClip));
    avg.mul_(kClip / (ref_norm + 1e-6));
    adamw_step(ref, avg, kHyper);
    scatter_flat(layout, ref_params, {0, layout.numel}, ref.master);
  }
  for (size_t s = 0; s < params.size(); ++s) {
    const double diff = (params[s].second - ref_params[s].second).abs().max().item<double>();
    EXPECT_LE(diff, 1e-6) << params[s].first;
  }
  // Each rank owns its shard_range part of every bucket, and the parts tile the flat space.
  int64_t owned = 0;
  for (const ZeroBucket& b : opt.buckets) owned += b.owned.size();
  at::Tensor total = at::tensor({static_cast<double>(owned)}, at::kDouble);
  dp.all_reduce(total, ReduceOp::kSum);
  const int64_t expect = c.stage == 0 || dp.size() == 1 ? layout.numel * dp.size() : layout.numel;
  EXPECT_EQ(static_cast<int64_t>(total.item<double>()), expect);
}

INSTANTIATE_TEST_SUITE_P(StagesAndBuckets, ZeroStep,
                         ::testing::Values(Case{0, 1 << 20}, Case{0, 20}, Case{1, 1 << 20}, Case{1, 20}, Case{1, 1},
                                           Case{2, 1 << 20}, Case{2, 20}, Case{2, 1}),
                         [](const auto& info) {
                           return "stage" + std::to_string(info.param.stage) + "_bucket" +
                                  std::to_string(info.param.bucket_numel);
                         });

// The update gated on the device (parallel/step_gate.h) against the host path it replaced,
// in float64 (fp64 parameters keep the optimizer's buffers in fp64): the host read the norm,
// skipped a non-finite step and clipped by scaling the averaged gradient, then ran AdamW on
// the whole flat space. Step 2 is poisoned on the last rank (a NaN in the element rank 0
// owns at stages 1-2), step 4 has an infinite loss: every rank skips both, leaving its
// weights, moments and step counts bitwise as they were.
struct GatedCase {
  int stage;
  int64_t bucket_numel;
  double clip;
};

class ZeroGatedStep : public ::testing::TestWithParam<GatedCase> {};

NamedParams make_params_f64() {
  NamedParams out;
  for (const auto& [name, p] : make_params()) out.emplace_back(name, p.detach().to(at::kDouble).requires_grad_(true));
  return out;
}

void set_grads_f64(const NamedParams& params, const FlatLayout& layout, int rank, int step) {
  for (size_t s = 0; s < params.size(); ++s) {
    at::Tensor g = at::empty_like(params[s].second.detach());
    double* d = g.data_ptr<double>();
    for (int64_t i = 0; i < g.numel(); ++i) d[i] = grad_value(rank, layout.slots[s].offset + i, step);
    params[s].second.mutable_grad() = g;
  }
}

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.numel() == b.numel() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0;
}

TEST_P(ZeroGatedStep, SkipsAndClipsOnTheDeviceAsTheHostDid) {
  const GatedCase c = GetParam();
  Communicator& dp = *g_ctx->dp;
  NamedParams params = make_params_f64();
  const FlatLayout layout = make_flat_layout(params);
  ZeroOptimizer opt = make_zero_optimizer(layout, params, &dp, c.stage, c.bucket_numel);
  ASSERT_EQ(opt.states.front().master.scalar_type(), at::kDouble);
  NamedParams ref_params = make_params_f64();
  AdamWState ref = make_adamw_state(layout, ref_params, {0, layout.numel});
  const double nan = std::numeric_limits<double>::quiet_NaN();
  int clipped = 0;
  for (int step = 0; step < 6; ++step) {
    set_grads_f64(params, layout, dp.rank(), step);
    if (step == 2 && dp.rank() == dp.size() - 1) params[0].second.mutable_grad().view(-1)[0] = nan;
    const double loss = step == 4 ? std::numeric_limits<double>::infinity() : 1.5;
    zero_reduce_gradients(opt, layout, params);
    std::vector<at::Tensor> before;
    for (const AdamWState& s : opt.states) {
      for (const at::Tensor& t : {s.master, s.exp_avg, s.exp_avg_sq, s.step}) before.push_back(t.clone());
    }
    const at::Tensor norm = global_grad_norm_tensor(opt, layout, params);
    zero_step(opt, layout, params, kHyper, make_step_gate(at::full({}, loss, at::kDouble), norm, c.clip));
    // The host path on the averaged gradient the ranks hold (gathered from their parts: the
    // average itself is checked by ZeroStep; summed in another order it would differ in the
    // last bits, which Adam magnifies where the average is about 0).
    at::Tensor avg = reduced_grad(opt, layout, params);
    if (opt.stage > 0) dp.all_reduce(avg, ReduceOp::kSum);  // the parts are disjoint
    const double ref_norm = avg.norm().item<double>();
    const bool skip = step == 2 || step == 4;
    if (skip) {
      size_t k = 0;
      for (const AdamWState& s : opt.states) {
        for (const at::Tensor& t : {s.master, s.exp_avg, s.exp_avg_sq, s.step}) {
          EXPECT_TRUE(same_bits(t, before[k++])) << "step " << step << " stage " << c.stage;
        }
      }
      continue;
    }
    EXPECT_NEAR(norm.item<double>(), ref_norm, 1e-12 * ref_norm) << "step " << step;
    if (c.clip > 0 && ref_norm > c.clip) avg.mul_(c.clip / (ref_norm + 1e-6)), ++clipped;
    adamw_step(ref, avg, kHyper);
    scatter_flat(layout, ref_params, {0, layout.numel}, ref.master);
  }
  for (size_t s = 0; s < params.size(); ++s) {
    const at::Tensor want = ref_params[s].second.detach();
    const double diff = (params[s].second.detach() - want).abs().max().item<double>();
    EXPECT_LE(diff, 1e-12 * want.abs().max().item<double>()) << params[s].first;
  }
  for (const AdamWState& s : opt.states) EXPECT_EQ(adamw_steps(s), 4);
  EXPECT_EQ(clipped, c.clip > 0 ? 4 : 0);  // kClip is below every step's norm
}

INSTANTIATE_TEST_SUITE_P(StagesBucketsClip, ZeroGatedStep,
                         ::testing::Values(GatedCase{0, 1 << 20, kClip}, GatedCase{0, 20, 0.0}, GatedCase{1, 20, kClip},
                                           GatedCase{1, 1, 0.0}, GatedCase{2, 20, kClip}, GatedCase{2, 1 << 20, 0.0}),
                         [](const auto& info) {
                           return "stage" + std::to_string(info.param.stage) + "_bucket" +
                                  std::to_string(info.param.bucket_numel) + (info.param.clip > 0 ? "_clip" : "_noclip");
                         });

TEST(ZeroBuckets, WholeParametersUpToTheBucketSize) {
  const NamedParams params = make_params();  // sizes 21, 5, 8, 22, 1, 39
  const FlatLayout layout = make_flat_layout(params);
  const auto buckets = plan_buckets(layout, 30);
  ASSERT_EQ(buckets.size(), 4u);
  EXPECT_EQ(buckets[0].begin, 0);
  EXPECT_EQ(buckets[0].end, 26);   // embed 21 + norm 5 (router's 8 would make 34)
  EXPECT_EQ(buckets[1].end, 56);   // router 8 + mlp 22: exactly 30
  EXPECT_EQ(buckets[2].end, 57);   // bias 1 (head's 39 would not fit)
  EXPECT_EQ(buckets[3].end, 96);   // head 39 > 30: a bucket of its own
  EXPECT_EQ(plan_buckets(layout, 1 << 20).size(), 1u);
  EXPECT_EQ(plan_buckets(layout, 1).size(), params.size());
}

TEST(ZeroMemory, MeasuredBytesEqualTheFormula) {
  Communicator& dp = *g_ctx->dp;
  const NamedParams params = make_params();
  const FlatLayout layout = make_flat_layout(params);
  const int64_t n = layout.numel;  // 96
  const int p = dp.size();
  for (int stage : {0, 1, 2}) {
    for (int64_t bucket : {int64_t{30}, int64_t{1} << 20}) {
    for (bool overlap : {false, true}) {
      ParamModel model;
      const DataParallelOptimizer dpo(model, make_flat_layout(model.params()), &dp, dp_options(stage, bucket, overlap));
      const ZeroOptimizer& opt = dpo.shards();
      const int effective = p == 1 ? 0 : stage;
      // Overlap at stage 2 keeps two staging buckets (one gathered while one is reduced).
      const int staging = overlap && effective == 2 ? 2 : 1;
      EXPECT_EQ(opt.staging_buffers, staging);
      EXPECT_EQ(opt.stage, effective);
      int64_t owned = 0;
      int64_t largest = 0;
      for (const ZeroBucket& b : opt.buckets) owned += b.owned.size(), largest = std::max(largest, b.flat.size());
      // Closed form of the owned count: the sum over buckets of shard_range parts.
      int64_t expect_owned = 0;
      for (const Range& r : plan_buckets(layout, bucket))
        expect_owned += effective == 0 ? r.size() : shard_range(r.size(), p, dp.rank()).size();
      EXPECT_EQ(owned, expect_owned);
      const ZeroMemory m = zero_memory(opt, dpo.params());
      EXPECT_EQ(m.weights, 4 * n);
      EXPECT_EQ(m.optimizer, 13 * owned);  // master, m, v: fp32 each; the decay mask: a byte
      // One rank: no gradient buffer at all (AdamW reads .grad).
      const int64_t flat = p == 1 ? 0 : effective == 2 ? 4 * largest * staging : 4 * n;
      EXPECT_EQ(opt.direct, p == 1);
      EXPECT_EQ(opt.flat_grad.defined(), p > 1 && effective < 2);
      EXPECT_EQ(m.gradients, 4 * n + flat + (effective > 0 ? 4 * owned : 0)) << "stage " << stage;
      const ZeroMemory f = zero_memory_formula(effective, p, n, 4, owned, largest, opt.staging_buffers);
      EXPECT_EQ(f.weights, m.weights);
      EXPECT_EQ(f.gradients, m.gradients);
      EXPECT_EQ(f.optimizer, m.optimizer);
    }
    }
  }
  // The per-parameter numbers of parallel/zero_optimizer.h for fp32 weights, N = 1e6 split in
  // P = 4 and one bucket of 2^16: stage 1 12 + 17/P bytes, stage 2 8 + 17/P plus the staging bucket.
  const ZeroMemory s1 = zero_memory_formula(1, 4, 1000000, 4, 250000, 65536);
  EXPECT_EQ(s1.weights + s1.gradients + s1.optimizer, 12 * 1000000 + 17 * 250000);
  const ZeroMemory s2 = zero_memory_formula(2, 4, 1000000, 4, 250000, 65536);
  EXPECT_EQ(s2.weights + s2.gradients + s2.optimizer, 8 * 1000000 + 17 * 250000 + 4 * 65536);
  // One rank, whatever the stage: 21 bytes (stage 0 over dp: 25).
  const ZeroMemory one = zero_memory_formula(2, 1, 1000000, 4, 1000000, 65536);
  EXPECT_EQ(one.weights + one.gradients + one.optimizer, 21 * 1000000);
  const ZeroMemory s0 = zero_memory_formula(0, 4, 1000000, 4, 1000000, 65536);
  EXPECT_EQ(s0.weights + s0.gradients + s0.optimizer, 25 * 1000000);
}

// Gradients through autograd, so that the accumulators' hooks fire: micro-batch m's loss is
// sum_i grad_value(rank, i, m) * p_i. `skip` leaves one parameter out of the last micro-batch
// (as a routed-around layer would be).
void backward_micro(const NamedParams& params, const FlatLayout& layout, int rank, int micro, const std::string& skip) {
  at::Tensor loss = at::zeros({}, at::kFloat);
  for (size_t s = 0; s < params.size(); ++s) {
    if (micro == 1 && params[s].first == skip) continue;
    at::Tensor c = at::empty(params[s].second.sizes(), at::kFloat);
    float* d = c.data_ptr<float>();
    for (int64_t i = 0; i < c.numel(); ++i) d[i] = static_cast<float>(grad_value(rank, layout.slots[s].offset + i, micro));
    loss = loss + (params[s].second * c.to(params[s].second.scalar_type())).sum();
  }
  loss.backward();
}

struct OverlapCase {
  int stage;
  std::vector<std::string> deferred;
  std::string skip;
  int expect_during_backward;  // buckets reduced before backward returned
  int passes = 1;              // backward calls of the last micro-batch (recomputed segments)
};

class ZeroOverlap : public ::testing::TestWithParam<OverlapCase> {};

// Buckets of 20 elements over make_params(): 0 embed | 1 norm, router.w | 2 mlp.w | 3 bias |
// 4 head; issued 4, 3, 2, 1, then deferred ones. The reduced gradient is bitwise that of the
// reduction after backward, whatever the hooks could start early.
TEST_P(ZeroOverlap, ReducesDuringBackwardWithTheSameResult) {
  const OverlapCase c = GetParam();
  Communicator& dp = *g_ctx->dp;
  if (dp.size() == 1) GTEST_SKIP() << "one rank: nothing to reduce";
  ParamModel overlapped_model, plain_model;
  NamedParams overlapped = overlapped_model.params(), plain = plain_model.params();
  const FlatLayout layout = make_flat_layout(overlapped);
  DataParallelOptimizer a(overlapped_model, layout, &dp, dp_options(c.stage, 20, true, c.deferred));
  DataParallelOptimizer b(plain_model, layout, &dp, dp_options(c.stage, 20, false));
  ASSERT_EQ(a.shards().buckets.size(), 5u);
  ASSERT_TRUE(a.overlapping());
  ASSERT_FALSE(b.overlapping());
  // Step 0 learns how often each accumulator fires; step 1 overlaps; step 2's last
  // micro-batch runs one backward more (as one more recomputed segment would), so gradients
  // arrive after their buckets were reduced and everything is reduced again; step 3 runs the
  // usual number again, fewer than step 2 taught, so its buckets wait until after backward.
  for (int step = 0; step < 4; ++step) {
    for (NamedParams* params : {&overlapped, &plain}) {
      for (auto& [name, p] : *params) p.mutable_grad() = at::Tensor();
    }
    const int passes = c.passes + (step == 2 ? 1 : 0);
    backward_micro(overlapped, layout, dp.rank(), 0, c.skip);
    a.arm_overlap();
    for (int i = 0; i < passes; ++i) backward_micro(overlapped, layout, dp.rank(), 1, c.skip);
    a.reduce_gradients();
    backward_micro(plain, layout, dp.rank(), 0, c.skip);
    for (int i = 0; i < passes; ++i) backward_micro(plain, layout, dp.rank(), 1, c.skip);
    b.reduce_gradients();
    EXPECT_TRUE(at::equal(reduced_grad(a.shards(), layout, a.params()), reduced_grad(b.shards(), layout, b.params())))
        << "step " << step;
    const int expect = step == 1 || step == 2 ? c.expect_during_backward : 0;
    EXPECT_EQ(a.overlap_stats().issued_during_backward, expect) << "step " << step;
    EXPECT_EQ(a.overlap_stats().redone, step >= 2 ? 1 : 0) << "step " << step;  // step 2, once
    // The reduced gradient is the average over ranks (closed form), so both are right.
    const at::Tensor avg = (average_grad(layout.numel, dp.size(), 0).to(at::kDouble) +
                            average_grad(layout.numel, dp.size(), 1).to(at::kDouble));
    EXPECT_NEAR(global_grad_norm(a.shards(), layout, a.params()), global_grad_norm(b.shards(), layout, b.params()), 0.0);
    if (c.skip.empty() && passes == 1) {
      EXPECT_NEAR(global_grad_norm(a.shards(), layout, a.params()), avg.norm().item<double>(), 1e-5 * avg.norm().item<double>());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ZeroOverlap,
    ::testing::Values(OverlapCase{0, {}, "", 5}, OverlapCase{1, {}, "", 5}, OverlapCase{2, {}, "", 5},
                      // The tied embedding (bucket 0) deferred; router.w (bucket 1) gets no
                      // gradient in the last micro-batch, which step 0 learns (0 firings), so
                      // buckets 4, 3, 2, 1 go during backward.
                      OverlapCase{1, {"embed"}, "router_w", 4}, OverlapCase{2, {"embed"}, "router_w", 4},
                      // A deferred bucket early in the order does not hold back the others.
                      OverlapCase{0, {"head"}, "", 4},
                      // Each accumulator fires twice in the last micro-batch.
                      OverlapCase{1, {}, "", 5, 2}, OverlapCase{2, {"embed"}, "", 4, 2}),
    [](const auto& info) {
      return "stage" + std::to_string(info.param.stage) + (info.param.deferred.empty() ? "" : "_defer_" + info.param.deferred[0]) +
             (info.param.skip.empty() ? "" : "_skip_router") + (info.param.passes > 1 ? "_twice" : "");
    });

// Moving a parameter to another dtype replaces its gradient accumulator (and our hook with
// it): arming refuses instead of missing that gradient.
TEST(ZeroOverlapMisuse, AParameterCastAfterEnablingIsRefused) {
  Communicator& dp = *g_ctx->dp;
  if (dp.size() == 1) GTEST_SKIP() << "one rank: no overlap";
  ParamModel model;
  NamedParams params = model.params();
  DataParallelOptimizer opt(model, make_flat_layout(params), &dp, dp_options(1, 20, true));
  opt.arm_overlap();  // fine
  opt.reduce_gradients();
  EXPECT_EQ(opt.overlap_stats().redone, 0);  // the overlap completed the reduction
  params[3].second.set_data(params[3].second.detach().to(at::kDouble));
  try {
    opt.arm_overlap();
    ADD_FAILURE() << "arming accepted a parameter whose accumulator was replaced";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("mlp_w changed dtype or device"), std::string::npos) << e.what();
  }
}

// The data-parallel optimizer owns its order (two silent gradient losses came from a
// caller's wrong order): there is no way to build it without the model's parameters, or
// to copy it (two owners of one set of hooks).
static_assert(!std::is_default_constructible_v<DataParallelOptimizer>);
static_assert(!std::is_copy_constructible_v<DataParallelOptimizer>);

// A step without this step's reduction would apply stale or unaveraged gradients.
TEST(DataParallelOptimizerMisuse, StepOrScaleWithoutReductionIsRefused) {
  Communicator& dp = *g_ctx->dp;
  for (bool overlap : {false, true}) {
    ParamModel model;
    const NamedParams params = model.params();
    const FlatLayout layout = make_flat_layout(params);
    DataParallelOptimizer opt(model, layout, &dp, dp_options(1, 20, overlap));
    auto expect_refused = [&](const std::function<void()>& call, const std::string& what) {
      try {
        call();
        ADD_FAILURE() << what << " accepted before reduce_gradients()";
      } catch (const common::RuntimeFailure& e) {
        EXPECT_NE(std::string(e.what()).find(what + " before reduce_gradients()"), std::string::npos) << e.what();
      }
    };
    set_grads(params, layout, dp.rank(), 0);
    const StepGate gate = always_apply(at::TensorOptions());
    expect_refused([&] { opt.step(kHyper, gate); }, "step()");
    opt.reduce_gradients();
    opt.step(kHyper, gate);
    // The next step's gradients have not been reduced yet.
    expect_refused([&] { opt.step(kHyper, gate); }, "step()");
  }
}

// Master weights come from fp32 values: a model already cast is refused, not silently used.
TEST(DataParallelOptimizerMisuse, AModelAlreadyCastIsRefused) {
  ParamModel model;
  model.to(at::kBFloat16);
  try {
    DataParallelOptimizer opt(model, make_flat_layout(model.params()), g_ctx->dp.get(), dp_options(0, 20, true));
    ADD_FAILURE() << "built from bf16 parameters";
  } catch (const common::RuntimeFailure& e) {
    EXPECT_NE(std::string(e.what()).find("master weights are read from the fp32 values"), std::string::npos) << e.what();
  }
}

// Built in one step with a bf16 compute dtype: the master weights are the fp32 values (not
// bf16-rounded ones), the model is cast, and the hooks sit on the cast parameters, so the
// overlap sees every gradient: the reduction equals the plain one after backward.
TEST(DataParallelOptimizer, CastsAfterReadingMasterWeightsAndHooksAfterTheCast) {
  Communicator& dp = *g_ctx->dp;
  for (int stage : {0, 1, 2}) {
    ParamModel overlapped_model, plain_model;
    const NamedParams fp32 = make_params();
    const FlatLayout layout = make_flat_layout(overlapped_model.params());
    DataParallelOptions o = dp_options(stage, 20, true);
    o.compute_dtype = at::kBFloat16;
    DataParallelOptimizer a(overlapped_model, layout, &dp, o);
    o.overlap = false;
    DataParallelOptimizer b(plain_model, layout, &dp, o);
    for (const auto& [name, p] : a.params()) EXPECT_EQ(p.scalar_type(), at::kBFloat16) << name;
    for (size_t k = 0; k < a.states().size(); ++k) {
      const AdamWState& s = *a.states()[k];
      at::Tensor expect = at::empty({s.range.size()}, at::kFloat);
      gather_flat(layout, fp32, s.range, Source::kValue, expect);
      EXPECT_TRUE(at::equal(s.master, expect)) << "stage " << stage << " bucket " << k;
    }
    for (int step = 0; step < 2; ++step) {  // the second step overlaps (the first learns)
      for (const DataParallelOptimizer* opt : {&a, &b}) {
        for (const auto& item : opt->params()) item.second.mutable_grad() = at::Tensor();
      }
      a.arm_overlap();
      backward_micro(a.params(), layout, dp.rank(), 0, "");
      a.reduce_gradients();
      backward_micro(b.params(), layout, dp.rank(), 0, "");
      b.reduce_gradients();
      const at::Tensor ga = reduced_grad(a.shards(), layout, a.params());
      EXPECT_TRUE(at::equal(ga, reduced_grad(b.shards(), layout, b.params()))) << "stage " << stage << " step " << step;
      EXPECT_GT(ga.abs().sum().item<double>(), 0.0);
    }
    if (dp.size() > 1) EXPECT_EQ(a.overlap_stats().issued_during_backward, static_cast<int>(a.shards().buckets.size()));
  }
}

TEST(ZeroNorm, ANonFiniteGradientOnOneRankIsSeenByAll) {
  Communicator& dp = *g_ctx->dp;
  for (int stage : {0, 1, 2}) {
    NamedParams params = make_params();
    const FlatLayout layout = make_flat_layout(params);
    ZeroOptimizer opt = make_zero_optimizer(layout, params, &dp, stage, 20);
    set_grads(params, layout, dp.rank(), 0);
    // The last rank poisons one element of the first parameter, owned by rank 0 at stages 1-2.
    if (dp.rank() == dp.size() - 1) params[0].second.mutable_grad().view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
    zero_reduce_gradients(opt, layout, params);
    EXPECT_FALSE(std::isfinite(global_grad_norm(opt, layout, params))) << "stage " << stage << " rank " << dp.rank();
  }
}

TEST(ZeroCheckpoint, StateOfOneStageAndBucketPlanLoadsIntoAnother) {
  Communicator& dp = *g_ctx->dp;
  int pid = static_cast<int>(::getpid());
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);  // one directory for all ranks
  const std::string root = (std::filesystem::temp_directory_path() / ("hydra_test_zero_" + std::to_string(pid))).string();
  NamedParams params = make_params();
  const FlatLayout layout = make_flat_layout(params);
  ZeroOptimizer saved = make_zero_optimizer(layout, params, &dp, 1, 20);
  for (int step = 0; step < 2; ++step) {
    set_grads(params, layout, dp.rank(), step);
    zero_reduce_gradients(saved, layout, params);
    zero_step(saved, layout, params, kHyper, always_apply(at::TensorOptions()));
  }
  checkpoint::SaveRequest req;
  req.root = root;
  req.progress.step = 2;
  req.layout = {{"world", dp.size()}, {"dp", dp.size()}, {"tp", 1}, {"pp", 1}, {"zero_stage", 1}};
  req.rank = g_ctx->grid.rank;
  req.world = dp.size();
  const std::string dir =
      checkpoint::save_checkpoint(req, params, layout, zero_states(std::as_const(saved)), g_ctx->world.get());
  // Gather the saved state everywhere: the expected content of any other plan.
  auto full = [&](ZeroOptimizer& opt, int which) {
    at::Tensor out = at::zeros({layout.numel}, at::kFloat);
    for (size_t b = 0; b < opt.buckets.size(); ++b) {
      const AdamWState& s = opt.states[b];
      const at::Tensor t = which == 0 ? s.master : which == 1 ? s.exp_avg : s.exp_avg_sq;
      out.narrow(0, s.range.begin, s.range.size()).copy_(t);
    }
    if (opt.stage > 0) dp.all_reduce(out, ReduceOp::kSum);  // parts are disjoint
    return out;
  };
  for (const Case& into : {Case{2, 7}, Case{0, 1 << 20}, Case{1, 1}}) {
    NamedParams fresh = make_params();
    ZeroOptimizer loaded = make_zero_optimizer(layout, fresh, &dp, into.stage, into.bucket_numel);
    checkpoint::load_checkpoint(dir, fresh, layout, zero_states(loaded));
    for (int which = 0; which < 3; ++which) {
      EXPECT_TRUE(at::equal(full(loaded, which), full(saved, which))) << "stage " << into.stage << " state " << which;
    }
    for (const AdamWState& s : loaded.states) EXPECT_EQ(adamw_steps(s), 2);
  }
  g_ctx->world->barrier();
  if (g_ctx->grid.rank == 0) std::filesystem::remove_all(root);
}

// Prints failed assertions of ranks other than 0, tagged with the rank.
}  // namespace
}  // namespace hydra::parallel

int main(int argc, char** argv) {
  // Every rank is a data-parallel replica.
  return hydra::test::mpi_test_main(
      argc, argv, "test_zero",
      [](int, char**, const hydra::parallel::LaunchInfo& launch) {
        return hydra::test::MpiTestSetup{hydra::parallel::resolve_grid_shape(launch.world, launch.world, 1, 1)};
      },
      hydra::parallel::g_ctx);
}
