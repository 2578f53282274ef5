// linear_cross_entropy (the chunked LM head and loss) against float64 autograd through the plain
// formulas: logits = h W^T, padding columns dropped, mean over counted rows of
// logsumexp(logits) - logits[target]; and the whole model's loss and gradients with the chunked
// head (return_logits false) against the same model through its logits (return_logits true).
#include <cmath>
#include <map>
#include <string>
#include <utility>

#include "model/hydra_model.h"
#include "model/linear_cross_entropy.h"
#include "model_test_util.h"

namespace hydra::model {
namespace {

using test::small_config;

// The reference: plain ops, autograd, nothing shared with linear_cross_entropy.
torch::Tensor reference_loss(const torch::Tensor& h, const torch::Tensor& w, const torch::Tensor& targets,
                             int64_t vocab_valid) {
  const torch::Tensor logits = torch::matmul(h, w.t()).narrow(1, 0, vocab_valid);
  const torch::Tensor counted = targets != kIgnoreTarget;
  const torch::Tensor picked = logits.gather(1, targets.clamp_min(0).unsqueeze(1)).squeeze(1);
  const torch::Tensor per_row = torch::logsumexp(logits, 1) - picked;
  return per_row.masked_select(counted).sum() / counted.sum().to(per_row.scalar_type());
}

// Targets in [0, vocab_valid), every `ignore_every`-th ignored (0: none).
torch::Tensor make_targets(int64_t n, int64_t vocab_valid, int ignore_every) {
  torch::Tensor t = torch::randint(vocab_valid, {n}, torch::kLong);
  if (ignore_every > 0) t.index_put_({torch::arange(0, n, ignore_every)}, kIgnoreTarget);
  return t;
}

struct Case {
  int64_t rows, dim, vocab, vocab_valid, chunk;
  int ignore_every;
};

class LinearCrossEntropySweep : public ::testing::TestWithParam<Case> {};

TEST_P(LinearCrossEntropySweep, Float64LossAndGradientsMatchReference) {
  const Case k = GetParam();
  torch::manual_seed(k.rows * 131 + k.vocab * 7 + k.chunk);
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  // Logits of a few units, so that the softmax is far from uniform.
  const torch::Tensor h0 = torch::randn({k.rows, k.dim}, f64), w0 = torch::randn({k.vocab, k.dim}, f64) * 0.7;
  const torch::Tensor targets = make_targets(k.rows, k.vocab_valid, k.ignore_every);
  const double upstream = 0.37;  // the backward must scale by the incoming gradient

  torch::Tensor h = h0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
  const torch::Tensor loss = linear_cross_entropy(h, w, targets, k.vocab_valid, k.chunk);
  (loss * upstream).backward();
  torch::Tensor hr = h0.clone().requires_grad_(true), wr = w0.clone().requires_grad_(true);
  const torch::Tensor ref = reference_loss(hr, wr, targets, k.vocab_valid);
  (ref * upstream).backward();

  EXPECT_EQ(loss.scalar_type(), torch::kDouble);
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-10);
  EXPECT_LT((h.grad() - hr.grad()).abs().max().item<double>(), 1e-10);
  EXPECT_LT((w.grad() - wr.grad()).abs().max().item<double>(), 1e-10);
  // Padding rows of W get no gradient at all.
  if (k.vocab > k.vocab_valid) {
    EXPECT_EQ(w.grad().narrow(0, k.vocab_valid, k.vocab - k.vocab_valid).abs().max().item<double>(), 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearCrossEntropySweep,
    ::testing::Values(Case{1, 3, 5, 5, 1, 0},          // one row
                      Case{7, 4, 17, 17, 3, 0},        // chunk does not divide N
                      Case{7, 4, 17, 17, 7, 0},        // one exact chunk
                      Case{7, 4, 17, 17, 100, 0},      // chunk larger than N
                      Case{33, 8, 97, 97, 5, 4},       // ignored targets
                      Case{33, 8, 128, 97, 5, 0},      // padded vocabulary
                      Case{33, 8, 128, 97, 8, 3},      // both
                      Case{64, 16, 1000, 1000, 13, 5},
                      Case{40, 6, 257, 200, 1, 2},     // one row per chunk
                      Case{50, 12, 1003, 1001, 64, 7}),
    [](const ::testing::TestParamInfo<Case>& info) {
      const Case& k = info.param;
      return "N" + std::to_string(k.rows) + "_E" + std::to_string(k.dim) + "_V" + std::to_string(k.vocab) + "_valid" +
             std::to_string(k.vocab_valid) + "_chunk" + std::to_string(k.chunk) + "_ignore" +
             std::to_string(k.ignore_every);
    });

TEST(LinearCrossEntropy, Float32AgreesWithFloat64Reference) {
  torch::manual_seed(5);
  const int64_t N = 48, E = 16, V = 640, valid = 600;
  const torch::Tensor h0 = torch::randn({N, E}, torch::kDouble), w0 = torch::randn({V, E}, torch::kDouble) * 0.5;
  const torch::Tensor targets = make_targets(N, valid, 5);
  torch::Tensor h = h0.to(torch::kFloat).requires_grad_(true), w = w0.to(torch::kFloat).requires_grad_(true);
  const torch::Tensor loss = linear_cross_entropy(h, w, targets, valid, 7);
  loss.backward();
  torch::Tensor hr = h0.clone().requires_grad_(true), wr = w0.clone().requires_grad_(true);
  const torch::Tensor ref = reference_loss(hr, wr, targets, valid);
  ref.backward();
  EXPECT_EQ(loss.scalar_type(), torch::kFloat);
  EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-5 * std::abs(ref.item<double>()));
  EXPECT_LT((h.grad().to(torch::kDouble) - hr.grad()).abs().max().item<double>(), 1e-6);
  EXPECT_LT((w.grad().to(torch::kDouble) - wr.grad()).abs().max().item<double>(), 1e-6);
}

TEST(LinearCrossEntropy, GradientsOnlyWhereRequired) {
  torch::manual_seed(6);
  const torch::Tensor h0 = torch::randn({20, 8}, torch::kDouble), w0 = torch::randn({50, 8}, torch::kDouble);
  const torch::Tensor targets = make_targets(20, 50, 0);
  const double ref = reference_loss(h0, w0, targets, 50).item<double>();
  {  // no grad mode: the loss alone
    torch::NoGradGuard no_grad;
    const torch::Tensor loss = linear_cross_entropy(h0.requires_grad_(false), w0, targets, 50, 6);
    EXPECT_NEAR(loss.item<double>(), ref, 1e-10);
    EXPECT_FALSE(loss.requires_grad());
  }
  // Only W requires a gradient (a frozen input): W's gradient is still right.
  torch::Tensor w = w0.clone().requires_grad_(true);
  linear_cross_entropy(h0, w, targets, 50, 6).backward();
  torch::Tensor wr = w0.clone().requires_grad_(true);
  reference_loss(h0, wr, targets, 50).backward();
  EXPECT_LT((w.grad() - wr.grad()).abs().max().item<double>(), 1e-10);
}

TEST(LinearCrossEntropy, EveryTargetIgnoredGivesNaNLossAndZeroGradient) {
  const torch::Tensor targets = torch::full({6}, kIgnoreTarget, torch::kLong);
  torch::Tensor h = torch::randn({6, 4}, torch::kDouble).requires_grad_(true);
  torch::Tensor w = torch::randn({9, 4}, torch::kDouble).requires_grad_(true);
  const torch::Tensor loss = linear_cross_entropy(h, w, targets, 9, 4);
  EXPECT_TRUE(std::isnan(loss.item<double>()));  // as nll_loss's mean over no targets
  loss.backward();
  EXPECT_EQ(h.grad().abs().max().item<double>(), 0.0);
  EXPECT_EQ(w.grad().abs().max().item<double>(), 0.0);
}

TEST(LinearCrossEntropy, ChunkRowsSplitTheRowsEquallyUnderTheBudget) {
  for (const bool cuda : {false, true}) {
    const int64_t budget = cuda ? (int64_t{1} << 30) : (int64_t{16} << 20);
    for (const int64_t vocab : {17, 1000, 50304, 50257}) {
      for (const int64_t rows : {1, 7, 4096, 16384, 100003}) {
        const int64_t chunk = linear_cross_entropy_chunk_rows(rows, vocab, cuda);
        const int64_t chunks = (rows + chunk - 1) / chunk;
        const std::string where = std::to_string(rows) + " rows, vocab " + std::to_string(vocab);
        EXPECT_GE(chunk, 1) << where;
        EXPECT_LE(chunk, rows) << where;
        EXPECT_LE(chunk * vocab * 4, budget) << where;
        const int64_t last = rows - (chunks - 1) * chunk;  // equal chunks: the last short by less than their count
        EXPECT_GE(last, 1) << where;
        EXPECT_GT(last + chunks, chunk) << where;
        // As few chunks as the budget allows: one chunk fewer would not fit.
        if (chunks > 1) EXPECT_GT((rows + chunks - 2) / (chunks - 1) * vocab * 4, budget) << where;
      }
    }
  }
}

// The model's chunked head (training and evaluation: return_logits false) against its logits
// path (return_logits true: head, log_softmax, nll_loss) in float64: loss and every gradient.
void expect_chunked_head_matches_logits_path(bool tied) {
  torch::manual_seed(11);
  ModelConfig c = small_config(97);  // padded to 128: padding columns are exercised
  c.tie_embeddings = tied;
  auto model = std::make_shared<HydraModelImpl>(c);
  model->to(torch::kDouble);
  const torch::Tensor tokens = torch::randint(97, {3, 11}, torch::kLong);
  torch::Tensor targets = torch::randint(97, {3, 11}, torch::kLong);
  targets.index_put_({1, torch::indexing::Slice(0, 4)}, kIgnoreTarget);

  auto run = [&](bool return_logits) {
    model->zero_grad();
    ForwardOptions options;
    options.return_logits = return_logits;
    const ModelOutput out = model->forward(tokens, targets, options);
    EXPECT_EQ(out.logits.defined(), return_logits);
    out.loss().backward();
    std::map<std::string, torch::Tensor> grads;
    for (const auto& p : model->named_parameters()) {
      if (p.value().grad().defined()) grads[p.key()] = p.value().grad().clone();
    }
    return std::make_pair(out.lm_loss.item<double>(), grads);
  };
  const auto [chunked_loss, chunked] = run(false);
  const auto [logits_loss, reference] = run(true);
  EXPECT_NEAR(chunked_loss, logits_loss, 1e-10);
  ASSERT_EQ(chunked.size(), reference.size());
  for (const auto& [name, g] : reference) {
    ASSERT_TRUE(chunked.count(name)) << name;
    EXPECT_LT((chunked.at(name) - g).abs().max().item<double>(), 1e-10) << name;
  }
  EXPECT_TRUE(chunked.count(tied ? "embed.weight" : "head.weight"));
}

TEST(LinearCrossEntropy, ModelTiedHeadMatchesLogitsPath) { expect_chunked_head_matches_logits_path(true); }
TEST(LinearCrossEntropy, ModelUntiedHeadMatchesLogitsPath) { expect_chunked_head_matches_logits_path(false); }

}  // namespace
}  // namespace hydra::model
