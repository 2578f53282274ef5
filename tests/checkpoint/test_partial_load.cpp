// Loading reads only what a rank needs: a checkpoint saved by one process (dp1, the whole
// optimizer state in one part per tensor) loaded as each of 4 ZeRO ranks gives every rank
// exactly its quarter of the state, and each rank reads its quarter of the optimizer state
// (widened to whole CRC blocks) instead of all of it. Damage in a block only the last rank
// reads fails that rank's load, naming file, dataset and block, and not the first rank's.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5_file.h"
#include "common/errors.h"

namespace {

namespace fs = std::filesystem;
using namespace hydra;

const std::string kBig = "blocks.0.layers.0.mlp.w_up.weight";

parallel::NamedParams make_params(int seed) {
  at::manual_seed(seed);
  // bf16 weights, so that the fp32 optimizer state is most of the bytes; the large tensor
  // spans many CRC blocks (kCrcBlockBytes), the odd-sized ones shift the ZeRO boundaries off
  // the block boundaries.
  return {{kBig, at::randn({1024, 8192}).to(at::kBFloat16)},
          {"blocks.0.layers.0.attn_norm.weight", at::randn({777})},
          {"embed.weight", at::randn({300, 129})}};
}

struct Saved {
  std::string root, dir;
  parallel::NamedParams params;
  parallel::FlatLayout layout;
  parallel::AdamWState optim;
  Saved() {
    root = (fs::temp_directory_path() / ("hydra_partial_load_" + std::to_string(::getpid()))).string();
    fs::remove_all(root);
    params = make_params(1);
    layout = parallel::make_flat_layout(params);
    optim = parallel::make_adamw_state(layout, params, {0, layout.numel});
    parallel::adamw_step(optim, at::randn({layout.numel}), parallel::AdamWHyper{at::scalar_tensor(3e-4, at::kDouble)});
    // A byte pattern found once in the file: two floats at the end of the large tensor.
    const auto& slot = big_slot();
    optim.exp_avg[slot.offset + slot.numel - 2] = 1234.5f;
    optim.exp_avg[slot.offset + slot.numel - 1] = -4321.25f;
    checkpoint::SaveRequest req;
    req.root = root;
    req.layout = {{"world", 1}, {"dp", 1}, {"tp", 1}, {"pp", 1}, {"zero_stage", 0}, {"micro_batches", 1}};
    dir = checkpoint::save_checkpoint(req, params, layout, &optim, nullptr);
  }
  ~Saved() { fs::remove_all(root); }
  const parallel::ParamSlot& big_slot() const {
    for (const auto& slot : layout.slots) {
      if (slot.name == kBig) return slot;
    }
    throw std::runtime_error("no slot " + kBig);
  }
  parallel::Range quarter(int rank) const { return {layout.numel * rank / 4, layout.numel * (rank + 1) / 4}; }
};

TEST(PartialLoad, Dp1OptimizerStateLoadsIntoFourZeroRanksReadingAQuarterEach) {
  const Saved saved;
  const parallel::NamedParams& params = saved.params;
  const parallel::FlatLayout& layout = saved.layout;
  const parallel::AdamWState& optim = saved.optim;
  int64_t weight_bytes = 0;
  for (const auto& [name, p] : params) weight_bytes += p.numel() * static_cast<int64_t>(p.element_size());
  const int64_t state_bytes = 3 * layout.numel * 4;
  for (int rank = 0; rank < 4; ++rank) {
    const parallel::Range range = saved.quarter(rank);
    parallel::NamedParams fresh = make_params(2);
    parallel::AdamWState state = parallel::make_adamw_state(layout, fresh, range);
    const auto loaded = checkpoint::load_checkpoint(saved.dir, fresh, layout, &state);
    for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(at::equal(fresh[i].second, params[i].second)) << rank;
    EXPECT_TRUE(at::equal(state.master, optim.master.narrow(0, range.begin, range.size()))) << rank;
    EXPECT_TRUE(at::equal(state.exp_avg, optim.exp_avg.narrow(0, range.begin, range.size()))) << rank;
    EXPECT_TRUE(at::equal(state.exp_avg_sq, optim.exp_avg_sq.narrow(0, range.begin, range.size()))) << rank;
    // Weights whole (every ZeRO rank holds them), and of each of the three state tensors the
    // quarter plus at most one partly needed CRC block at each end per stored part (rows of
    // the small 2-d tensor are shorter than a block, so whole rows add nothing beyond that).
    const int64_t bound = weight_bytes + 3 * (range.size() * 4 + 2 * 3 * checkpoint::kCrcBlockBytes);
    EXPECT_LE(loaded.bytes_read, bound) << "rank " << rank;
    EXPECT_LT(loaded.bytes_read, weight_bytes + state_bytes * 6 / 10) << "rank " << rank;
    std::printf("rank %d of 4 read %.1f MB (weights %.1f MB + optimizer state: %.1f MB of %.1f MB)\n", rank,
                loaded.bytes_read / 1e6, weight_bytes / 1e6, (loaded.bytes_read - weight_bytes) / 1e6, state_bytes / 1e6);
  }
}

TEST(PartialLoad, DamageFailsOnlyTheRanksThatReadIt) {
  const Saved saved;
  const std::string file = saved.dir + "/rank_00000.h5";
  {
    std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(io)), std::istreambuf_iterator<char>());
    const float pattern[2] = {1234.5f, -4321.25f};
    const size_t at_pos = bytes.find(std::string(reinterpret_cast<const char*>(pattern), sizeof pattern));
    ASSERT_NE(at_pos, std::string::npos);
    io.seekp(static_cast<std::streamoff>(at_pos + 1));
    io.put(static_cast<char>(bytes[at_pos + 1] ^ 0x04));
  }
  // The whole-file size is unchanged, so the index lets the load open the file. The damage
  // lies in the last quarter of the flat space.
  const auto& slot = saved.big_slot();
  ASSERT_GE(slot.offset + slot.numel - 2, saved.quarter(3).begin);
  for (int rank : {0, 3}) {
    parallel::NamedParams fresh = make_params(2);
    parallel::AdamWState state = parallel::make_adamw_state(saved.layout, fresh, saved.quarter(rank));
    if (rank == 0) {
      EXPECT_NO_THROW(checkpoint::load_checkpoint(saved.dir, fresh, saved.layout, &state));
      EXPECT_TRUE(at::equal(state.exp_avg, saved.optim.exp_avg.narrow(0, 0, state.exp_avg.numel())));
      continue;
    }
    try {
      checkpoint::load_checkpoint(saved.dir, fresh, saved.layout, &state);
      FAIL() << "damage not detected by the rank that reads it";
    } catch (const common::InputError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("rank_00000.h5"), std::string::npos) << what;
      EXPECT_NE(what.find("/optim/exp_avg/" + kBig), std::string::npos) << what;
      EXPECT_NE(what.find("checksum mismatch in block"), std::string::npos) << what;
    }
  }
}

}  // namespace
