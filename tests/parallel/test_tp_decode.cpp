// Cached decoding under tensor parallelism (model/decode.h) against the full forward of ONE
// process: every rank builds the single-process model (the reference, run without any
// communication) and the tp model holding this rank's slices of the same weights; prefill and
// token-by-token decode_step of the tp model must give the reference's logits with causal
// routing at every position, float64 to 1e-10 and float32 to 1e-5 (relative to the largest
// logit), for each attention type (GQA and MHA with their KV heads split, MQA's and MLA's
// replicated, CCQA's split or replicated), MoD and MoR. The Sensitive test checks that the
// comparison notices one rank's cache losing an entry. CPU, MPI backend; the world is the tp
// group (mpirun -np 2: tests/parallel/CMakeLists.txt). Own main(), as test_tensor_parallel.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include <torch/types.h>
#include <torch/utils.h>

#include "model/decode.h"
#include "model/decode_batch.h"
#include "model/hydra_model.h"
#include "parallel/parallel_context.h"
#include "parallel/tensor_parallel.h"
#include "tests/model/decode_test_util.h"
#include "tests/parallel/mpi_test_main.h"

namespace hydra::parallel {
namespace {

using model::test::kTokens;

// Larger than the decoding tests' 61: the padded vocabulary (256 under tp 2) then has real rows
// and columns on both ranks, so the embedding's and the head's sums over tp carry tokens.
constexpr int kVocab = 200;

ParallelContext* g_ctx = nullptr;
Communicator& tp() { return *g_ctx->tp; }

// The decoding tests' tiny config (decode_test_util.h) with `kv_heads` key/value heads.
model::ModelConfig config(const model::test::Shape& s, int kv_heads = 2, bool tied = false) {
  model::ModelConfig c = model::test::decode_config(s);
  c.kv_heads = kv_heads;
  c.tie_embeddings = tied;
  c.vocab_size = kVocab;
  return c;
}

// n random token ids of the whole vocabulary.
torch::Tensor tokens_of(int64_t n) {
  torch::manual_seed(3);
  return torch::randint(kVocab, {n}, torch::kLong);
}

// The single-process model: random weights away from their init (decode_test_util.h), float32.
std::shared_ptr<model::HydraModelImpl> reference_model(const model::ModelConfig& c) {
  torch::manual_seed(0);
  auto m = std::make_shared<model::HydraModelImpl>(c);
  model::test::randomize(*m);
  m->eval();
  return m;
}

// The tp model holding this rank's part of every reference parameter: the slice its placement
// names (rows of a vocabulary padded further for tp that the reference lacks are zero: padding).
std::shared_ptr<model::HydraModelImpl> tp_model(const model::ModelConfig& c, model::HydraModelImpl& ref) {
  model::ModelOptions options;
  options.tp = tp().size();
  options.projection_factory = make_tp_projection_factory(tp());
  options.tp_hooks = make_tp_hooks(tp());
  auto m = std::make_shared<model::HydraModelImpl>(c, options);
  torch::NoGradGuard no_grad;
  const auto whole = ref.named_parameters();
  for (auto& item : m->named_parameters()) {
    const torch::Tensor* full = whole.find(item.key());
    if (full == nullptr) {
      ADD_FAILURE() << item.key() << ": not in the one-process model";
      continue;
    }
    torch::Tensor mine = item.value();
    const model::ParamPlacement& where = model::placement_of(m->placements, item.key());
    if (!where.tp_split()) {
      mine.copy_(*full);
      continue;
    }
    const int dim = where.shard.split_dim;
    const int64_t begin = where.shard.offset[dim], local = mine.size(dim);
    const int64_t kept = std::max<int64_t>(0, std::min(local, full->size(dim) - begin));
    mine.zero_();
    if (kept > 0) mine.narrow(dim, 0, kept).copy_(full->narrow(dim, begin, kept));
  }
  m->eval();
  return m;
}

// The largest |tp decoding - one-process full forward| over the positions from prefix-1 on,
// relative to the largest reference logit (at least 1): prefill of `prefix` tokens, then one
// decode_step per token. Also checks that every rank got the same whole logits row.
double max_tp_decode_error(model::HydraModel& ref, model::HydraModelImpl& mine, const torch::Tensor& tokens,
                           int64_t prefix) {
  const torch::Tensor full =
      model::test::full_forward(ref, tokens).logits.select(0, 0).narrow(-1, 0, kVocab).to(torch::kDouble);
  model::Decoded d = model::prefill(mine, tokens.narrow(0, 0, prefix), tokens.size(0));
  double worst = 0;
  auto compare = [&](const torch::Tensor& logits, int64_t t) {
    const torch::Tensor got = logits.narrow(0, 0, kVocab).to(torch::kDouble).contiguous();
    torch::Tensor most = got.clone();
    tp().all_reduce(most, ReduceOp::kMax);
    EXPECT_TRUE(torch::equal(got, most)) << "position " << t << ": the ranks' logits differ";
    const torch::Tensor want = full.select(0, t);
    const double scale = std::max(1.0, want.abs().max().item<double>());
    worst = std::max(worst, (got - want).abs().max().item<double>() / scale);
  };
  compare(d.logits, prefix - 1);
  for (int64_t t = prefix; t < tokens.size(0); ++t) {
    compare(model::decode_step(mine, d.state, tokens[t].item<int64_t>()), t);
  }
  EXPECT_EQ(d.state.length(), tokens.size(0));
  return worst;
}

// Token by token and from a prefilled prompt of 9, float64 (1e-10) and float32 (1e-5).
void expect_tp_decoding_matches(const model::ModelConfig& c) {
  const torch::Tensor tokens = tokens_of(kTokens);
  for (const auto& [dtype, tol] : {std::pair{torch::kDouble, 1e-10}, std::pair{torch::kFloat, 1e-5}}) {
    auto ref = reference_model(c);
    auto mine = tp_model(c, *ref);
    ref->to(dtype);
    mine->to(dtype);
    model::HydraModel reference = ref;
    EXPECT_LT(max_tp_decode_error(reference, *mine, tokens, 1), tol) << "token by token, " << torch::toString(dtype);
    EXPECT_LT(max_tp_decode_error(reference, *mine, tokens, 9), tol) << "prefill of 9, " << torch::toString(dtype);
  }
}

using model::test::Shape;

// MQA: the one KV head replicated. GQA (4 heads on 2 KV heads) and MHA: KV heads split.
TEST(TpDecode, MqaMatchesOneProcess) { expect_tp_decoding_matches(config({{"mqa"}})); }
TEST(TpDecode, GqaMatchesOneProcess) { expect_tp_decoding_matches(config({{"gqa"}}, tp().size())); }
TEST(TpDecode, MhaMatchesOneProcess) { expect_tp_decoding_matches(config({{"mha"}})); }
// CCQA: KV heads split (kv_heads 2), replicated with the cross-rank qk-mean sum (kv_heads 1),
// and the heads layout.
TEST(TpDecode, CcqaMatchesOneProcess) { expect_tp_decoding_matches(config({{"ccqa"}})); }
TEST(TpDecode, CcqaReplicatedKvMatchesOneProcess) { expect_tp_decoding_matches(config({{"ccqa"}}, 1)); }
TEST(TpDecode, CcqaHeadsLayoutMatchesOneProcess) {
  expect_tp_decoding_matches(config({{"ccqa"}, false, 1, "heads"}));
}
// MLA: the latent cache replicated, the absorbed up-projections split by heads.
TEST(TpDecode, MlaMatchesOneProcess) { expect_tp_decoding_matches(config({{"mla"}})); }
TEST(TpDecode, DefaultPatternTiedMatchesOneProcess) {
  expect_tp_decoding_matches(config({model::ModelConfig{}.pattern}, 2, /*tied=*/true));
}
TEST(TpDecode, ModMatchesOneProcess) { expect_tp_decoding_matches(config({model::ModelConfig{}.pattern, true})); }
TEST(TpDecode, MorMatchesOneProcess) {
  expect_tp_decoding_matches(config({{"mqa", "ccqa", "mla"}, /*mod=*/true, /*recursions=*/3}, 1));
}
TEST(TpDecode, GroupedKindsWithModAndMorMatchOneProcess) {
  expect_tp_decoding_matches(config({{"gqa", "mha", "mqa", "ccqa"}, /*mod=*/true, /*recursions=*/2}, tp().size()));
}

// Rows decoded together under tp (model/decode_batch.h: each rank's rows hold its heads'
// caches) equal the reference's single-sequence steps, rows at different lengths.
TEST(TpDecode, BatchMatchesOneProcess) {
  const model::ModelConfig c = config({model::ModelConfig{}.pattern, /*mod=*/true, /*recursions=*/2});
  auto ref = reference_model(c);
  auto mine = tp_model(c, *ref);
  ref->to(torch::kDouble);
  mine->to(torch::kDouble);
  const torch::Tensor tokens = tokens_of(kTokens);
  model::Decoded theirs = model::prefill(*ref, tokens.narrow(0, 0, 6), kTokens);
  std::vector<model::DecodeState> alone(2, theirs.state);
  model::decode_step(*ref, alone[1], 7);
  model::DecodeBatch batch(*mine, 2, kTokens);
  const model::Decoded ours = model::prefill(*mine, tokens.narrow(0, 0, 6), kTokens);
  batch.load(0, ours.state);
  batch.load(1, ours.state);
  batch.step({0, 7}, {false, true});  // row 1 a token further on
  for (int64_t step = 0; step < 6; ++step) {
    const int64_t t = tokens[6 + step].item<int64_t>();
    const std::vector<int64_t> next = {t, (t + 1) % kVocab};
    const torch::Tensor together = batch.step(next);
    for (size_t i = 0; i < 2; ++i) {
      const torch::Tensor single = model::decode_step(*ref, alone[i], next[i]);
      EXPECT_LT((together[static_cast<int64_t>(i)].narrow(0, 0, kVocab) - single.narrow(0, 0, kVocab)).abs().max().item<double>(),
                1e-10)
          << "step " << step;
    }
  }
}

// The comparison notices one rank's cache losing an entry: rank 1 alone drops the oldest
// token's entry of one layer (its own KV heads of GQA; its copy of MLA's latent; its CCQA
// heads), and the next logits move on every rank.
TEST(TpDecode, SensitiveToEachRanksCache) {
  const model::ModelConfig c = config({{"gqa", "mla", "ccqa"}}, tp().size());
  auto ref = reference_model(c);
  auto mine = tp_model(c, *ref);
  mine->to(torch::kDouble);
  const torch::Tensor tokens = tokens_of(kTokens);
  const model::Decoded base = model::prefill(*mine, tokens.narrow(0, 0, 10), kTokens);
  model::DecodeState ok = base.state;
  const torch::Tensor want = model::decode_step(*mine, ok, tokens[10].item<int64_t>());
  for (int l = 0; l < 3; ++l) {
    model::DecodeState broken = base.state;
    if (tp().rank() == 1) {
      model::AttentionCache& cache = broken.blocks[0].recursions[0][l];
      if (auto* g = std::get_if<model::GqaCache>(&cache)) g->k = g->k.narrow(1, 1, 9), g->v = g->v.narrow(1, 1, 9);
      if (auto* m = std::get_if<model::MlaCache>(&cache)) m->latent = m->latent.narrow(1, 1, 9);
      if (auto* q = std::get_if<model::CcqaCache>(&cache)) q->k = q->k.narrow(1, 1, 9), q->v = q->v.narrow(1, 1, 9);
    }
    const torch::Tensor got = model::decode_step(*mine, broken, tokens[10].item<int64_t>());
    EXPECT_GT((got - want).narrow(0, 0, kVocab).abs().max().item<double>(), 1e-3) << "layer " << l;
  }
}

}  // namespace
}  // namespace hydra::parallel

int main(int argc, char** argv) {
  // Every rank is in one tensor-parallel group.
  return hydra::test::mpi_test_main(
      argc, argv, "test_tp_decode",
      [](int, char**, const hydra::parallel::LaunchInfo& launch) {
        torch::set_num_threads(1);  // ranks share the cores
        return hydra::test::MpiTestSetup{hydra::parallel::resolve_grid_shape(launch.world, 1, launch.world, 1)};
      },
      hydra::parallel::g_ctx);
}
