// Tensor parallelism against one process (CPU, MPI backend, fp32): every layer type and the
// whole model, built with the tp projection factory and hooks on every rank of the world (the
// world is the tp group), must give the single-process outputs, loss and gradients (each
// rank's slice of them) within 1e-5. The single-process reference is built on every rank
// from the same seed. Own main(): MPI session; gtest output on rank 0; failure on any rank
// fails every rank.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <memory>

#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "common/errors.h"
#include "model/hydra_model.h"
#include "model/linear_cross_entropy.h"
#include "parallel/mpi_session.h"
#include "parallel/parallel_context.h"
#include "parallel/tensor_parallel.h"
#include "tests/parallel/mpi_test_main.h"

namespace hydra::parallel {
namespace {

ParallelContext* g_ctx = nullptr;
Communicator& tp() { return *g_ctx->tp; }

model::ModelConfig config(int kv_heads) {
  model::ModelConfig c;
  c.dim = 32;
  c.heads = 4;  // d = 8; tp 4 leaves one head per rank
  c.kv_heads = kv_heads;
  c.mlp_ratio = 2.0;
  c.macro_blocks = 1;
  c.vocab_size = 200;
  c.ccqa.compression = 2;  // d_h = 4
  c.ccqa.compress = "head_dim";  // heads would leave 2 query heads, which tp 4 cannot split
  return c;
}

// The part of the single-process tensor `full` that this rank holds as `local`: the one
// dimension whose size differs is split in equal consecutive parts (rows past the end of
// `full`, extra vocabulary padding of a larger tp, are compared with zero).
void expect_slice(const torch::Tensor& full, const torch::Tensor& local, const std::string& what) {
  ASSERT_EQ(full.dim(), local.dim()) << what;
  torch::Tensor ref = full, mine = local;
  for (int64_t d = 0; d < full.dim(); ++d) {
    if (full.size(d) == local.size(d)) continue;
    const int64_t begin = local.size(d) * tp().rank();
    const int64_t kept = std::max<int64_t>(0, std::min(local.size(d), full.size(d) - begin));
    if (kept < local.size(d)) {
      EXPECT_EQ(mine.narrow(d, kept, local.size(d) - kept).abs().max().item<double>(), 0.0) << what;
    }
    ref = full.narrow(d, std::min(begin, full.size(d)), kept);
    mine = local.narrow(d, 0, kept);
    break;
  }
  if (ref.numel() == 0) return;
  const double scale = std::max(1.0, ref.abs().max().item<double>());
  EXPECT_LE((ref - mine).abs().max().item<double>(), 1e-5 * scale) << what << " (rank " << tp().rank() << ")";
}

// Every parameter's value and gradient of the tp module against the reference module.
void expect_params(torch::nn::Module& ref, torch::nn::Module& mine) {
  const auto mine_params = mine.named_parameters();
  for (const auto& item : ref.named_parameters()) {
    const torch::Tensor* p = mine_params.find(item.key());
    ASSERT_NE(p, nullptr) << item.key();
    expect_slice(item.value(), *p, item.key() + " value");
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    ASSERT_TRUE(p->grad().defined()) << item.key();
    expect_slice(item.value().grad(), p->grad(), item.key() + " grad");
  }
}

// One sub-layer (attention type or "mlp") as the model runs it: x enters the tp region, the
// row-parallel output leaves it. Compares outputs, input gradient and parameter gradients.
void check_sublayer(const std::string& type, const model::ModelConfig& c) {
  const model::TensorParallelHooks hooks = make_tp_hooks(tp());
  const model::ProjectionFactory factory = make_tp_projection_factory(tp());
  auto build = [&](const model::ProjectionFactory& f, const model::TensorParallelHooks& h) -> std::shared_ptr<torch::nn::Module> {
    torch::manual_seed(7);
    if (type == "mlp") return std::make_shared<model::MlpImpl>(model::model_dims(c), f);
    return model::make_attention(type, c, f, h);
  };
  auto run = [&](torch::nn::Module& m, const torch::Tensor& x, const torch::Tensor& pos) {
    if (type == "mlp") return static_cast<model::MlpImpl&>(m).forward(x);
    return static_cast<model::AttentionImpl&>(m).forward(x, pos);
  };
  auto ref = build(model::default_projection_factory(), {});
  auto mine = build(factory, hooks);
  torch::manual_seed(11);
  const int64_t B = 2, S = 6;
  const torch::Tensor x0 = torch::randn({B, S, c.dim});
  const torch::Tensor w = torch::randn({B, S, c.dim});
  const torch::Tensor pos = torch::arange(S).unsqueeze(0).expand({B, S});
  const torch::Tensor x_ref = x0.clone().requires_grad_(true), x_tp = x0.clone().requires_grad_(true);
  const torch::Tensor y_ref = run(*ref, x_ref, pos);
  const torch::Tensor y_tp = run(*mine, hooks.enter(x_tp), pos);
  expect_slice(y_ref.detach(), y_tp.detach(), type + " output");
  (y_ref * w).sum().backward();
  (y_tp * w).sum().backward();
  expect_slice(x_ref.grad(), x_tp.grad(), type + " input grad");
  expect_params(*ref, *mine);
}

TEST(TensorParallel, RegionFunctionsSumInTheDocumentedDirection) {
  const double n = tp().size();
  const torch::Tensor x = torch::full({3}, 1.0 + tp().rank()).requires_grad_(true);
  const torch::Tensor y = copy_to_region(tp(), x);
  EXPECT_TRUE(torch::equal(y.detach(), x.detach()));
  y.sum().backward();
  EXPECT_DOUBLE_EQ(x.grad()[0].item<double>(), n);
  const torch::Tensor x2 = torch::full({3}, 1.0).requires_grad_(true);
  const torch::Tensor r = reduce_from_region(tp(), x2);
  EXPECT_DOUBLE_EQ(r[0].item<double>(), n);
  r.sum().backward();
  EXPECT_DOUBLE_EQ(x2.grad()[0].item<double>(), 1.0);
}

TEST(TensorParallel, MlpEqualsOneProcess) { check_sublayer("mlp", config(2)); }
TEST(TensorParallel, MqaEqualsOneProcess) { check_sublayer("mqa", config(2)); }
TEST(TensorParallel, MlaEqualsOneProcess) { check_sublayer("mla", config(2)); }
// kv_heads 2: split under tp 2, replicated under tp 4; kv_heads 1: always replicated.
TEST(TensorParallel, CcqaEqualsOneProcess) { check_sublayer("ccqa", config(2)); }
TEST(TensorParallel, CcqaWithReplicatedKvHeadsEqualsOneProcess) { check_sublayer("ccqa", config(1)); }
// gqa's KV heads split with the query heads: kv_heads = tp (tp 2: 4 heads on 2 KV heads, one of
// them per rank; tp 4: one of each per rank). mha: every rank its own H / tp of both.
TEST(TensorParallel, GqaEqualsOneProcess) { check_sublayer("gqa", config(tp().size())); }
TEST(TensorParallel, MhaEqualsOneProcess) { check_sublayer("mha", config(2)); }

// The chunked head and loss over a vocabulary split in tp slices (VocabShard) against one
// process's linear_cross_entropy, in float64: the same loss on every rank, each rank's slice of
// W's gradient, and h's gradient once the slices' parts are summed (the tp region's enter).
// V 203 leaves the last slice padded (at tp 4: 51 columns a rank, 1 of padding); chunks of 5
// rows over 23 rows, the last one shorter; ignored targets, and targets in every slice.
TEST(TensorParallel, VocabShardedLinearCrossEntropyEqualsOneProcess) {
  const int64_t N = 23, E = 6, V = 203;
  const int ranks = tp().size(), rank = tp().rank();
  const int64_t v_local = (V + ranks - 1) / ranks, begin = v_local * rank;
  const int64_t valid_here = std::clamp<int64_t>(V - begin, 0, v_local);
  torch::manual_seed(13);
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  const torch::Tensor h0 = torch::randn({N, E}, f64), w0 = torch::randn({V, E}, f64);
  torch::Tensor targets = torch::randint(0, V, {N}, torch::kLong);
  targets[2] = model::kIgnoreTarget;
  targets[17] = model::kIgnoreTarget;
  targets[5] = V - 1;  // the padded slice's last real column
  const torch::Tensor h_ref = h0.clone().requires_grad_(true), w_ref = w0.clone().requires_grad_(true);
  const torch::Tensor loss_ref = model::linear_cross_entropy(h_ref, w_ref, targets, V, /*chunk_rows=*/5);
  loss_ref.backward();

  const model::TensorParallelHooks hooks = make_tp_hooks(tp());
  const model::VocabShard shard{begin, hooks.max_over_group, hooks.sum_over_group};
  torch::Tensor w_mine = torch::zeros({v_local, E}, f64);
  if (valid_here > 0) w_mine.narrow(0, 0, valid_here).copy_(w0.narrow(0, begin, valid_here));
  w_mine.requires_grad_(true);
  const torch::Tensor h_mine = h0.clone().requires_grad_(true);
  const torch::Tensor loss = model::linear_cross_entropy(hooks.enter(h_mine), w_mine, targets, valid_here, 5, &shard);
  loss.backward();
  EXPECT_NEAR(loss.item<double>(), loss_ref.item<double>(), 1e-12) << "rank " << rank;
  EXPECT_LE((h_mine.grad() - h_ref.grad()).abs().max().item<double>(), 1e-12) << "rank " << rank;
  expect_slice(w_ref.grad(), w_mine.grad(), "W's gradient");
}

// The whole model (every attention type, MoD and MoR on; the default pattern, or one with the
// grouped-query kinds): loss and every gradient. `return_logits` false: the training path (the
// chunked head, vocabulary-parallel under tp), whose loss alone is compared.
void check_model(bool tied, int kv_heads = 2, const std::vector<std::string>& pattern = model::ModelConfig{}.pattern,
                 bool return_logits = true) {
  model::ModelConfig c = config(kv_heads);
  c.pattern = pattern;
  c.tie_embeddings = tied;
  c.mor.recursions = 2;
  model::ModelOptions tp_options;
  tp_options.tp = tp().size();
  tp_options.projection_factory = make_tp_projection_factory(tp());
  tp_options.tp_hooks = make_tp_hooks(tp());
  torch::manual_seed(3);
  auto ref = std::make_shared<model::HydraModelImpl>(c);
  torch::manual_seed(3);
  auto mine = std::make_shared<model::HydraModelImpl>(c, tp_options);
  torch::manual_seed(5);
  const torch::Tensor tokens = torch::randint(0, c.vocab_size, {2, 16});
  torch::Tensor targets = torch::randint(0, c.vocab_size, {2, 16});
  targets[0][3] = -100;
  model::ForwardOptions options;
  options.return_logits = return_logits;
  const model::ModelOutput out_ref = ref->forward(tokens, targets, options);
  const model::ModelOutput out_tp = mine->forward(tokens, targets, options);
  EXPECT_NEAR(out_tp.lm_loss.item<double>(), out_ref.lm_loss.item<double>(), 1e-5);
  EXPECT_NEAR(out_tp.aux_loss.item<double>(), out_ref.aux_loss.item<double>(), 1e-5);
  EXPECT_EQ(out_tp.logits.defined(), return_logits);
  if (return_logits) {
    // Padded columns are -inf on both sides: compare them as zeros.
    auto finite = [](const torch::Tensor& l) { return torch::where(torch::isinf(l), torch::zeros_like(l), l.detach()); };
    expect_slice(finite(out_ref.logits), finite(out_tp.logits), "logits");
  }
  ASSERT_EQ(out_tp.routing.size(), out_ref.routing.size());
  for (size_t i = 0; i < out_ref.routing.size(); ++i) EXPECT_EQ(out_tp.routing[i].selected, out_ref.routing[i].selected);
  out_ref.loss().backward();
  out_tp.loss().backward();
  expect_params(*ref, *mine);
  // Replicated parameters hold the same gradient on every tp rank.
  for (const auto& item : mine->named_parameters()) {
    if (model::placement_of(mine->placements, item.key()).tp_split()) continue;
    torch::Tensor g = item.value().grad().clone();
    torch::Tensor g_max = g.clone();
    tp().all_reduce(g_max, ReduceOp::kMax);
    EXPECT_TRUE(torch::equal(g, g_max)) << item.key() << " differs across tp ranks";
  }
}

TEST(TensorParallel, TiedModelEqualsOneProcess) { check_model(true); }
TEST(TensorParallel, UntiedModelEqualsOneProcess) { check_model(false); }
// Training's loss alone: the chunked vocabulary-parallel head against one process's chunked head.
TEST(TensorParallel, TiedModelTrainingLossEqualsOneProcess) { check_model(true, 2, model::ModelConfig{}.pattern, false); }
TEST(TensorParallel, UntiedModelTrainingLossEqualsOneProcess) {
  check_model(false, 2, model::ModelConfig{}.pattern, false);
}
// gqa, mha and mqa side by side, the KV heads of gqa split over tp (kv_heads = tp).
TEST(TensorParallel, GroupedModelEqualsOneProcess) {
  check_model(false, tp().size(), {"gqa", "mha", "mqa", "ccqa", "gqa", "mla", "mha", "mqa"});
}

}  // namespace
}  // namespace hydra::parallel

int main(int argc, char** argv) {
  // Every rank is in one tensor-parallel group.
  return hydra::test::mpi_test_main(
      argc, argv, "test_tensor_parallel",
      [](int, char**, const hydra::parallel::LaunchInfo& launch) {
        torch::set_num_threads(1);  // ranks share the cores
        return hydra::test::MpiTestSetup{hydra::parallel::resolve_grid_shape(launch.world, 1, launch.world, 1)};
      },
      hydra::parallel::g_ctx);
}
