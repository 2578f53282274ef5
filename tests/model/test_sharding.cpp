// Parameter placements (model/sharding.h) of a tied tp2 x pp2 model, against what the
// parameter shapes say: a tensor smaller than the whole model's tensor of the same name along
// one dimension is this rank's slice of it (offset: its size times the tp rank); any other is
// held whole and stored by tp rank 0, except the last stage's copy of the tied embedding.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <string>
#include <vector>

#include "model/hydra_model.h"
#include "tests/model/model_test_util.h"

namespace hydra::model {
namespace {

constexpr int kTp = 2;

// Every layer type, MoD on one position, MoR routers, two macro-blocks (one per stage).
ModelConfig tied_config() {
  ModelConfig c = test::small_config();
  c.pattern = {"mqa", "ccqa", "mla", "gqa"};  // gqa: 2 KV heads, split over tp 2
  c.macro_blocks = 2;
  c.tie_embeddings = true;
  c.mod.enabled = true;
  c.mod.layers = {1};
  c.mor.recursions = 2;
  return c;
}

// What tensor parallelism would build on rank `rank`, for shapes only: column-parallel
// projections keep out / tp output features, row-parallel ones in / tp input features.
ModelOptions tp_rank_options(int rank, StageLayers stage) {
  ModelOptions o;
  o.tp = kTp;
  o.stage = stage;
  o.tp_hooks.size = kTp;
  o.tp_hooks.rank = rank;
  o.tp_hooks.sum_grad = [](at::Tensor&) {};
  o.projection_factory = [](ProjectionSpec spec) -> Projection {
    if (spec.role == ShardRole::kColumn) spec.out /= kTp;
    if (spec.role == ShardRole::kRow) spec.in /= kTp;
    return std::make_shared<LinearProjection>(spec);
  };
  return o;
}

void expect_placement(const ParamPlacement& got, const std::string& name, const at::Tensor& local,
                      const at::Tensor& whole, int rank, bool tied_copy, int64_t vocab_size) {
  std::vector<int64_t> offset(local.dim(), 0);
  int split_dim = -1;
  for (int64_t d = 0; d < local.dim(); ++d) {
    if (local.size(d) == whole.size(d)) continue;
    ASSERT_EQ(split_dim, -1) << name << " differs from the whole tensor in two dimensions";
    ASSERT_EQ(local.size(d) * kTp, whole.size(d)) << name;
    split_dim = static_cast<int>(d);
    offset[d] = local.size(d) * rank;
  }
  EXPECT_EQ(got.shard.split_dim, split_dim) << name;
  EXPECT_EQ(got.tp_split(), split_dim >= 0) << name;
  EXPECT_EQ(got.shard.global_shape, whole.sizes().vec()) << name;
  EXPECT_EQ(got.shard.offset, offset) << name;
  const bool vocab = name == "embed.weight" || name == "head.weight";
  EXPECT_EQ(got.shard.valid_rows, vocab ? vocab_size : -1) << name;
  EXPECT_EQ(got.tied_copy, tied_copy) << name;
  EXPECT_EQ(got.shard.primary, !tied_copy && (split_dim >= 0 || rank == 0)) << name;
}

TEST(Sharding, TiedTp2Pp2PlacementsFollowTheParameterShapes) {
  const ModelConfig c = tied_config();
  ModelOptions whole_options;
  whole_options.tp = kTp;  // the vocabulary padded as for tp 2
  const HydraModelImpl whole(c, whole_options);
  const auto whole_params = whole.named_parameters();
  const int per_stage = static_cast<int>(c.pattern.size());
  int stored = 0;  // primary placements over the 4 ranks, counted in elements of whole tensors
  for (int stage = 0; stage < 2; ++stage) {
    for (int rank = 0; rank < kTp; ++rank) {
      const HydraModelImpl mine(c, tp_rank_options(rank, {stage * per_stage, (stage + 1) * per_stage}));
      const auto params = mine.named_parameters();
      // Exactly one placement per parameter, and none for anything else.
      ASSERT_EQ(mine.placements.by_name.size(), params.size()) << "stage " << stage << " rank " << rank;
      for (const auto& item : params) {
        ASSERT_EQ(mine.placements.by_name.count(item.key()), 1u) << item.key();
        const at::Tensor* w = whole_params.find(item.key());
        ASSERT_NE(w, nullptr) << item.key();
        const bool tied_copy = stage == 1 && item.key() == "embed.weight";
        const ParamPlacement& got = placement_of(mine.placements, item.key());
        expect_placement(got, item.key(), item.value(), *w, rank, tied_copy, c.vocab_size);
        if (got.shard.primary) stored += static_cast<int>(item.value().numel());
      }
    }
  }
  // Every element of the whole model is stored once (the slices of a split tensor add up).
  EXPECT_EQ(stored, static_cast<int>(test::count_parameters(whole)));
}

TEST(Sharding, WholeModelHoldsEveryParameterWhole) {
  const ModelConfig c = tied_config();
  const HydraModelImpl whole(c);
  for (const auto& item : whole.named_parameters()) {
    const ParamPlacement& got = placement_of(whole.placements, item.key());
    expect_placement(got, item.key(), item.value(), item.value(), 0, false, c.vocab_size);
  }
}

}  // namespace
}  // namespace hydra::model
