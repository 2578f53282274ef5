// Resharding at the library level, with a saved layout the trainer cannot make yet: four
// simulated ranks of tp2 x pp2 (stage 0: the embedding, vocabulary-split with padding, and a
// row-parallel weight split along dim 1; stage 1: a column-parallel weight, a replicated norm
// and the tied embedding's copy, which must not be stored twice) write one checkpoint. It
// loads into one process holding everything, and into a pipeline stage holding only some
// parameters; weights and AdamW state equal the global tensors the ranks were cut from, and
// `consolidate` returns those tensors whole.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <map>

#include "checkpoint/checkpoint.h"
#include "checkpoint/commit.h"
#include "checkpoint/consolidate.h"
#include "checkpoint/h5_file.h"
#include "checkpoint/snapshot.h"
#include "checkpoint/weights_file.h"
#include "common/errors.h"

namespace {

namespace fs = std::filesystem;
using namespace hydra;

// The whole model: name -> {weights, master, exp_avg, exp_avg_sq}, embed with 5 real rows.
struct Global {
  std::map<std::string, std::vector<at::Tensor>> t;
  Global() {
    at::manual_seed(11);
    for (const auto& [name, shape] : std::map<std::string, std::vector<int64_t>>{
             {"embed.weight", {5, 4}}, {"blocks.0.layers.0.mlp.w_down.weight", {4, 8}},
             {"blocks.0.layers.1.mlp.w_up.weight", {8, 4}}, {"final_norm.weight", {4}}}) {
      for (int i = 0; i < 4; ++i) t[name].push_back(at::randn(shape));
    }
  }
};

// A rank's part: `name` split along `dim` into `parts` (-1: whole), slice `index`, the
// vocabulary padded to `rows` (0: no padding).
struct Part {
  std::string name;
  int dim = -1, parts = 1, index = 0;
  int64_t rows = 0;
  bool primary = true;
};

model::ShardInfo placement(const Global& g, const Part& p) {
  model::ShardInfo s;
  s.global_shape = g.t.at(p.name)[0].sizes().vec();
  if (p.rows) s.global_shape[0] = p.rows, s.valid_rows = g.t.at(p.name)[0].size(0);
  s.offset.assign(s.global_shape.size(), 0);
  if (p.dim >= 0) s.split_dim = p.dim, s.offset[p.dim] = s.global_shape[p.dim] / p.parts * p.index;
  s.primary = p.primary;
  return s;
}

// Tensor i of `p` as that rank holds it: the slice, padding rows zero.
at::Tensor local(const Global& g, const Part& p, int i) {
  at::Tensor whole = g.t.at(p.name)[i];
  if (p.rows) whole = at::cat({whole, at::zeros({p.rows - whole.size(0), whole.size(1)})});
  if (p.dim < 0) return whole.clone();
  const int64_t n = whole.size(p.dim) / p.parts;
  return whole.narrow(p.dim, n * p.index, n).clone();
}

struct Rank {
  parallel::NamedParams params;
  parallel::FlatLayout layout;
  parallel::AdamWState optim;
  std::vector<model::ShardInfo> placements;
};

Rank make_rank(const Global& g, const std::vector<Part>& parts, bool fill) {
  Rank r;
  for (const auto& p : parts) {
    r.params.emplace_back(p.name, fill ? local(g, p, 0) : at::full_like(local(g, p, 0), 7.0));
    r.placements.push_back(placement(g, p));
  }
  r.layout = parallel::make_flat_layout(r.params);
  r.optim = parallel::make_adamw_state(r.layout, r.params, {0, r.layout.numel});
  parallel::set_adamw_steps(r.optim, fill ? 9 : 0);
  for (size_t k = 0; k < parts.size(); ++k) {
    const auto& slot = r.layout.slots[k];
    const std::vector<at::Tensor*> state = {&r.optim.master, &r.optim.exp_avg, &r.optim.exp_avg_sq};
    for (int i = 0; i < 3; ++i) {
      state[i]->narrow(0, slot.offset, slot.numel).copy_(fill ? local(g, parts[k], i + 1).reshape({-1}) : at::full({slot.numel}, 7.0));
    }
  }
  return r;
}

const std::string kEmbed = "embed.weight", kDown = "blocks.0.layers.0.mlp.w_down.weight",
                  kUp = "blocks.0.layers.1.mlp.w_up.weight", kNorm = "final_norm.weight";

struct ReshardTest : ::testing::Test {
  void SetUp() override {
    root = fs::temp_directory_path() / ("hydra_reshard_" + std::to_string(::getpid()));
    fs::remove_all(root);
    // tp2 x pp2: rank = stage * 2 + tp. The embedding pads to 8 rows for tp2.
    const std::vector<std::vector<Part>> layout = {
        {{kEmbed, 0, 2, 0, 8}, {kDown, 1, 2, 0}},
        {{kEmbed, 0, 2, 1, 8}, {kDown, 1, 2, 1}},
        {{kUp, 0, 2, 0}, {kNorm}, {kEmbed, 0, 2, 0, 8, false}},
        {{kUp, 0, 2, 1}, {kNorm, -1, 1, 0, 0, false}, {kEmbed, 0, 2, 1, 8, false}}};
    std::vector<Rank> ranks;
    for (const auto& parts : layout) ranks.push_back(make_rank(global, parts, true));
    checkpoint::SaveRequest req;
    req.root = root.string();
    req.layout = {{"world", 4}, {"tp", 2}, {"pp", 2}};
    req.world = 4;
    for (int r = 0; r < 4; ++r) {  // rank 0 first: it prepares the directory
      req.rank = r;
      req.placements = ranks[r].placements;
      const std::string file = checkpoint::begin_save(req, nullptr);
      checkpoint::write_snapshot(checkpoint::take_snapshot(req, ranks[r].params, ranks[r].layout, {&ranks[r].optim}), file);
    }
    req.rank = 0;
    dir = checkpoint::commit_save(req, 9, nullptr);
  }
  void TearDown() override { fs::remove_all(root); }

  // The loaded rank holds exactly the global tensors (padding zero).
  void expect_global(const Rank& r, const std::vector<Part>& parts) {
    EXPECT_EQ(parallel::adamw_steps(r.optim), 9);
    for (size_t k = 0; k < parts.size(); ++k) {
      EXPECT_TRUE(at::equal(r.params[k].second, local(global, parts[k], 0))) << parts[k].name;
      const auto& slot = r.layout.slots[k];
      const std::vector<const at::Tensor*> state = {&r.optim.master, &r.optim.exp_avg, &r.optim.exp_avg_sq};
      for (int i = 0; i < 3; ++i) {
        EXPECT_TRUE(at::equal(state[i]->narrow(0, slot.offset, slot.numel), local(global, parts[k], i + 1).reshape({-1})))
            << parts[k].name << " state " << i;
      }
    }
  }

  Global global;
  fs::path root;
  std::string dir;
};

TEST_F(ReshardTest, Tp2Pp2LoadsIntoOneProcess) {
  // One process pads the vocabulary to 6 rows here (as tp1 pads less than tp2).
  const std::vector<Part> all = {{kEmbed, -1, 1, 0, 6}, {kDown}, {kUp}, {kNorm}};
  Rank one = make_rank(global, all, false);
  checkpoint::load_checkpoint(dir, one.params, one.layout, &one.optim, one.placements);
  expect_global(one, all);
}

TEST_F(ReshardTest, Tp2Pp2LoadsIntoALastStageWithTheTiedCopyAndTp4Slices) {
  // pp2 at tp1: the last stage holds w_up, the norm and the tied embedding's copy; another
  // rank of tp4 holds a quarter of w_down (dim 1) and of the embedding padded to 8 rows.
  const std::vector<Part> stage = {{kUp}, {kNorm}, {kEmbed, -1, 1, 0, 6, false}};
  Rank last = make_rank(global, stage, false);
  checkpoint::load_checkpoint(dir, last.params, last.layout, &last.optim, last.placements);
  expect_global(last, stage);
  const std::vector<Part> tp4 = {{kEmbed, 0, 4, 2, 8}, {kDown, 1, 4, 3}};
  Rank quarter = make_rank(global, tp4, false);
  checkpoint::load_checkpoint(dir, quarter.params, quarter.layout, &quarter.optim, quarter.placements);
  expect_global(quarter, tp4);
}

TEST_F(ReshardTest, EveryPartIsStoredOnceAndConsolidatesWhole) {
  int embeds = 0, norms = 0;
  for (int r = 0; r < 4; ++r) {
    const auto f = checkpoint::H5File::open_read(dir + "/" + checkpoint::rank_file_name(r));
    embeds += f.exists("/model/" + kEmbed) + f.exists("/optim/master/" + kEmbed);
    norms += f.exists("/model/" + kNorm) + f.exists("/optim/master/" + kNorm);
  }
  EXPECT_EQ(embeds, 4);  // two tp slices of the first stage, weights and state; not the copies
  EXPECT_EQ(norms, 2);   // tp rank 0 of the last stage only
  const std::string out = (root / "weights.h5").string();
  EXPECT_EQ(checkpoint::consolidate_checkpoint(dir, out), 4);
  const auto f = checkpoint::H5File::open_read(out);
  for (const auto& [name, tensors] : global.t) {
    EXPECT_TRUE(at::equal(f.read_tensor("/model/" + name), tensors[0])) << name;
  }
}

TEST_F(ReshardTest, AMissingStageFileIsAnErrorNamingTheParameter) {
  fs::remove(fs::path(dir) / "rank_00003.h5");
  const std::vector<Part> all = {{kEmbed, -1, 1, 0, 6}, {kDown}, {kUp}, {kNorm}};
  Rank one = make_rank(global, all, false);
  try {
    checkpoint::load_checkpoint(dir, one.params, one.layout, &one.optim, one.placements);
    FAIL() << "loaded without rank 3's file";
  } catch (const common::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("rank_00003.h5"), std::string::npos) << e.what();
  }
}

// The consolidated file as a source of weights (--init-from FILE, hydra generate/eval): into one
// process (vocabulary padded to 6 rows) and into tp4 slices (padded to 8, w_down split along
// dim 1), the same values as from the checkpoint directory, which are the global tensors.
TEST_F(ReshardTest, ConsolidatedFileLoadsIntoEveryPlacement) {
  const std::string file = (root / "weights.h5").string();
  ASSERT_EQ(checkpoint::consolidate_checkpoint(dir, file), 4);
  EXPECT_TRUE(checkpoint::is_weights_file(file));
  EXPECT_FALSE(checkpoint::is_weights_file(dir));
  for (const std::vector<Part>& parts : {std::vector<Part>{{kEmbed, -1, 1, 0, 6}, {kDown}, {kUp}, {kNorm}},
                                         std::vector<Part>{{kEmbed, 0, 4, 2, 8}, {kDown, 1, 4, 3}, {kUp, 0, 4, 1}}}) {
    for (const std::string& source : {file, dir}) {
      Rank r = make_rank(global, parts, false);
      const checkpoint::LoadedCheckpoint loaded = checkpoint::load_weights(source, r.params, r.placements);
      EXPECT_EQ(loaded.dir, source);
      for (size_t k = 0; k < parts.size(); ++k) {
        EXPECT_TRUE(at::equal(r.params[k].second, local(global, parts[k], 0))) << source << " " << parts[k].name;
      }
    }
  }
}

// What is not a consolidated file of this model is refused naming the file and the dataset.
TEST_F(ReshardTest, AWrongWeightsFileIsAnErrorNamingIt) {
  const std::string file = (root / "weights.h5").string();
  checkpoint::consolidate_checkpoint(dir, file);
  const auto refused = [](const std::string& source, const parallel::NamedParams& params, const std::string& expect) {
    try {
      checkpoint::load_weights(source, params);
      ADD_FAILURE() << source << " loaded";
    } catch (const common::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
    }
  };
  const parallel::NamedParams norm = {{kNorm, at::zeros({4})}};
  refused(dir + "/index.h5", norm, "not a consolidated weights file");
  refused(file, {{"blocks.9.norm.weight", at::zeros({4})}}, "/model/blocks.9.norm.weight is missing");
  refused(file, {{kNorm, at::zeros({5})}}, "has shape [4], the model expects [5]");
}

}  // namespace
