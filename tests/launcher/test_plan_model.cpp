// hydra plan's formulas against hand-computed values: ring collectives, the 1F1B bubble, the
// memory of a layout equal to hydra info's estimate for that layout, a single-GPU step time,
// the cluster file's strict checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <tuple>

#include <unistd.h>

#include "common/errors.h"
#include "launcher/config_load.h"
#include "launcher/plan_files.h"
#include "model/model_info.h"
#include "parallel/process_grid.h"
#include "train/memory_estimate.h"
#include "train/plan_model.h"

namespace {

namespace fs = std::filesystem;
using namespace hydra;

const train::Link kLink{1e9, 1e-6};  // 1 GB/s, 1 us

TEST(PlanFormulas, RingAllReduce) {
  // 2(n-1) steps of latency + 2(n-1)/n x bytes / bandwidth: n 4, 1 GB -> 6 us + 1.5 s.
  EXPECT_DOUBLE_EQ(train::allreduce_seconds(1e9, 4, kLink), 6e-6 + 1.5);
  EXPECT_DOUBLE_EQ(train::allreduce_seconds(1e9, 1, kLink), 0.0);
  EXPECT_DOUBLE_EQ(train::allreduce_seconds(1e9, 2, kLink), 2e-6 + 1.0);
}

TEST(PlanFormulas, ReduceScatterAllGatherP2p) {
  EXPECT_DOUBLE_EQ(train::reduce_scatter_seconds(1e9, 4, kLink), 3e-6 + 0.75);
  EXPECT_DOUBLE_EQ(train::all_gather_seconds(1e9, 8, kLink), 7e-6 + 0.875);
  EXPECT_DOUBLE_EQ(train::p2p_seconds(5e8, kLink), 1e-6 + 0.5);
}

TEST(PlanFormulas, MeasuredAllReduceCurveIsReadOnItsRanks) {
  train::Link link = kLink;
  link.all_reduce = {2, {{1e3, 1e-4}, {1e5, 1e-2}}};
  // Log-log between the points: 1e4 bytes is halfway, 1e-3 s; the ends clamp and scale.
  EXPECT_NEAR(train::allreduce_seconds(1e4, 2, link), 1e-3, 1e-15);
  EXPECT_DOUBLE_EQ(train::allreduce_seconds(10, 2, link), 1e-4);
  EXPECT_DOUBLE_EQ(train::allreduce_seconds(1e6, 2, link), 1e-1);
  // Measured on 2 ranks: 4 ranks fall back to the ring formula.
  EXPECT_DOUBLE_EQ(train::allreduce_seconds(1e9, 4, link), 6e-6 + 1.5);
}

TEST(PlanFormulas, Bubble) {
  EXPECT_DOUBLE_EQ(train::bubble_fraction(4, 8), 3.0 / 8);
  EXPECT_DOUBLE_EQ(train::bubble_fraction(1, 8), 0.0);
  EXPECT_DOUBLE_EQ(train::bubble_fraction(2, 1), 1.0);
}

train::Cluster test_cluster() {
  train::Cluster c;
  c.name = "test";
  c.gpus_per_node = 8;
  c.peak_flops = 1e12;
  c.hbm_bytes = 1e12;
  c.intra = kLink;
  c.inter = {1e8, 1e-5};
  return c;
}

// Rates of arithmetic alone: no per-micro-batch overhead, a free optimizer.
train::PlanRates flops_only(double flops) {
  train::PlanRates r;
  r.achieved_flops = flops;
  return r;
}

launcher::Config tiny() {
  return launcher::load_config(std::string(HYDRA_SOURCE_DIR) + "/configs/tiny.yaml", {"train.dtype=bf16"});
}

TEST(PlanModel, MemoryIsHydraInfosEstimateForTheLayout) {
  const launcher::Config base = tiny();
  const train::PlanRates rates = flops_only(1e11);
  for (const train::Layout& l : {train::Layout{2, 1, 1, 1, 2, 2, "layer"}, train::Layout{1, 2, 1, 0, 8, 1, "none"},
                                 train::Layout{1, 1, 2, 0, 2, 4, "mlp"}}) {
    const train::Prediction p = train::predict_layout(base, l, test_cluster(), rates);
    ASSERT_TRUE(p.feasible) << p.reason;
    const train::RunConfig c = train::with_layout(base, l);
    const auto shape = parallel::resolve_grid_shape(l.dp * l.tp * l.pp, l.dp, l.tp, l.pp);
    EXPECT_EQ(p.memory.peak(), train::estimate_memory(c, shape).worst().peak()) << l.name();
  }
}

TEST(PlanModel, OneGpuStepIsFlopsOverRate) {
  const launcher::Config base = tiny();
  const train::PlanRates rates = flops_only(1e11);
  const train::Prediction p = train::predict_layout(base, {1, 1, 1, 0, 8, 1, "none"}, test_cluster(), rates);
  ASSERT_TRUE(p.feasible) << p.reason;
  const double fpt = model::compute_model_stats(base.model, base.train.seq_len).flops_per_token;
  EXPECT_NEAR(p.step_ms, fpt * 8 * 128 / 1e11 * 1e3, 1e-9);
  EXPECT_DOUBLE_EQ(p.exposed_comm_ms(), 0.0);
  EXPECT_DOUBLE_EQ(p.bubble_ms, 0.0);
  EXPECT_NEAR(p.mfu, 0.1, 1e-12);  // achieved / peak
}

TEST(PlanModel, PipelineBubbleAndTensorParallelComm) {
  const launcher::Config base = tiny();
  const train::PlanRates rates = flops_only(1e11);
  const train::Prediction pp = train::predict_layout(base, {1, 1, 2, 0, 2, 4, "none"}, test_cluster(), rates);
  ASSERT_TRUE(pp.feasible) << pp.reason;
  EXPECT_NEAR(pp.bubble_ms, pp.compute_ms / 4, 1e-9);  // (p-1)/m with no tp
  // p2p: 2 x (m + p - 1) messages of micro_batch x seq x E x 2 bytes.
  EXPECT_NEAR(pp.pp_comm_ms, 2 * 5 * (1e-6 + 2.0 * 128 * 64 * 2 / 1e9) * 1e3, 1e-9);
  const train::Prediction tp = train::predict_layout(base, {1, 2, 1, 0, 8, 1, "none"}, test_cluster(), rates);
  ASSERT_TRUE(tp.feasible) << tp.reason;
  // 4 all-reduces per effective layer (32) of 8 x 128 x 64 x 2 bytes over 2 ranks.
  EXPECT_NEAR(tp.tp_comm_ms, 32 * 4 * (2e-6 + 8.0 * 128 * 64 * 2 / 1e9) * 1e3, 1e-9);
}

TEST(PlanModel, InfeasibleLayoutsSayWhy) {
  const launcher::Config base = tiny();
  const train::PlanRates rates = flops_only(1e11);
  EXPECT_EQ(train::predict_layout(base, {1, 3, 1, 0, 8, 1, "none"}, test_cluster(), rates).reason,
            "tp 3 does not divide 4 heads");
  train::Cluster small = test_cluster();
  small.hbm_bytes = 1e6;
  const train::Prediction p = train::predict_layout(base, {1, 1, 1, 0, 8, 1, "none"}, small, rates);
  EXPECT_FALSE(p.feasible);
  EXPECT_NE(p.reason.find("GB HBM"), std::string::npos) << p.reason;
  const auto all = train::plan_layouts(base, 4, test_cluster(), rates);
  ASSERT_FALSE(all.empty());
  EXPECT_TRUE(all.front().feasible);
  for (size_t i = 1; i < all.size(); ++i) {
    if (all[i].feasible) EXPECT_GE(all[i - 1].tok_s, all[i].tok_s);
  }
}

TEST(PlanRates, TwoMicroBatchSizesSeparateOverheadFromRate) {
  // forward+backward = 0.05 s + FLOPs / 1e9: runs of 64 and 512 tokens at 1e6 FLOPs a token.
  const double fpt = 1e6;
  auto run = [&](double tokens) { return train::CalibrationPoint{tokens, 0.05 + fpt * tokens / 1e9, 0.02}; };
  const train::PlanRates r = train::fit_rates({run(64), run(512)}, fpt, 4e6);
  EXPECT_NEAR(r.achieved_flops, 1e9, 1e-3);
  EXPECT_NEAR(r.micro_batch_overhead, 0.05, 1e-12);
  EXPECT_NEAR(r.optimizer_per_param, 0.02 / 4e6, 1e-18);
  // One run: all of its time is arithmetic.
  const train::PlanRates one = train::fit_rates({run(512)}, fpt, 4e6);
  EXPECT_NEAR(one.achieved_flops, fpt * 512 / (0.05 + fpt * 512 / 1e9), 1e-3);
  EXPECT_EQ(one.micro_batch_overhead, 0.0);
  // Runs that take less time with more tokens (noise) give no negative rate: the largest alone.
  const train::PlanRates odd =
      train::fit_rates({train::CalibrationPoint{64, 0.9, 0}, train::CalibrationPoint{512, 0.5, 0}}, fpt, 4e6);
  EXPECT_NEAR(odd.achieved_flops, fpt * 512 / 0.5, 1e-3);
  EXPECT_EQ(odd.micro_batch_overhead, 0.0);
}

TEST(PlanRates, TpSliceRunSeparatesTheWorkTpDoesNotDivide) {
  // A model whose forward+backward is 0.05 s a micro-batch + 1 us a token that tp divides +
  // 0.25 us a token every tp rank repeats; runs of 64 and 512 tokens whole, and of 512 tokens as
  // one rank of tp 2 and of tp 4 (the overhead is per micro-batch: not divided).
  const double fpt = 1e6, divided = 1e-6, replicated = 0.25e-6;
  auto run = [&](double tokens, int k) {
    return train::CalibrationPoint{tokens, 0.05 + tokens * (divided / k + replicated), k == 1 ? 0.02 : 0.0, k};
  };
  const train::PlanRates r = train::fit_rates({run(64, 1), run(512, 1), run(512, 2), run(512, 4)}, fpt, 4e6);
  EXPECT_NEAR(r.micro_batch_overhead, 0.05, 1e-12);
  EXPECT_NEAR(r.replicated_per_token, replicated, 1e-15);
  EXPECT_NEAR(r.achieved_flops, fpt / divided, 1e-9 * fpt / divided);
  EXPECT_NEAR(r.optimizer_per_param, 0.02 / 4e6, 1e-18);  // the whole-model runs' (the slices' update less)
  // Without the slice the same whole-model runs put everything in the divided rate.
  const train::PlanRates whole = train::fit_rates({run(64, 1), run(512, 1)}, fpt, 4e6);
  EXPECT_NEAR(whole.achieved_flops, fpt / (divided + replicated), 1e-9 * fpt / divided);
  EXPECT_EQ(whole.replicated_per_token, 0.0);
  // A slice no faster than an even split (noise) replicates nothing; one as slow as the whole
  // model is held below it (a finite divided rate).
  const train::CalibrationPoint fast{512, 0.05 + 0.9 * 512 * (divided + replicated) / 2, 0, 2};
  EXPECT_EQ(train::fit_rates({run(64, 1), run(512, 1), fast}, fpt, 4e6).replicated_per_token, 0.0);
  const train::CalibrationPoint slow{512, run(512, 1).forward_backward_s, 0, 2};
  const train::PlanRates all = train::fit_rates({run(64, 1), run(512, 1), slow}, fpt, 4e6);
  EXPECT_NEAR(all.replicated_per_token, 0.95 * (divided + replicated), 1e-15);
  EXPECT_NEAR(all.achieved_flops, fpt / (0.05 * (divided + replicated)), 1e-6 * fpt / divided);
  EXPECT_THROW(train::fit_rates({run(512, 2)}, fpt, 4e6), std::exception);  // a slice alone
}

TEST(PlanModel, ReplicatedWorkIsNotDividedByTensorParallelism) {
  const launcher::Config base = tiny();
  const train::PlanRates flat = flops_only(1e11);
  train::PlanRates rates = flat;
  rates.replicated_per_token = 1e-6;
  const double tokens = 8.0 * 128;
  for (const auto& [dp, tp] : {std::pair{1, 1}, std::pair{1, 2}, std::pair{2, 1}, std::pair{2, 2}}) {
    const train::Layout l{dp, tp, 1, 0, 8 / dp, 1, "none"};
    const train::Prediction with = train::predict_layout(base, l, test_cluster(), rates);
    const train::Prediction without = train::predict_layout(base, l, test_cluster(), flat);
    ASSERT_TRUE(with.feasible) << with.reason;
    // Each rank repeats it for its dp share of the tokens, whatever tp is.
    EXPECT_NEAR(with.compute_ms - without.compute_ms, tokens / dp * 1e-6 * 1e3, 1e-9) << l.name();
  }
  // A recomputed forward repeats its share too.
  const train::Layout layer{1, 2, 1, 0, 8, 1, "layer"};
  EXPECT_NEAR(train::predict_layout(base, layer, test_cluster(), rates).compute_ms -
                  train::predict_layout(base, layer, test_cluster(), flat).compute_ms,
              tokens * 1e-6 * 1e3 * 4.0 / 3.0, 1e-9);
}

TEST(PlanModel, OverheadPerMicroBatchAndOptimizerPerParameter) {
  const launcher::Config base = tiny();
  train::PlanRates rates = flops_only(1e11);
  rates.micro_batch_overhead = 0.01;
  rates.optimizer_per_param = 1e-9;
  const train::Prediction flat = train::predict_layout(base, {1, 1, 1, 0, 8, 1, "none"}, test_cluster(), flops_only(1e11));
  const train::Prediction one = train::predict_layout(base, {1, 1, 1, 0, 8, 1, "none"}, test_cluster(), rates);
  const double params = static_cast<double>(model::compute_model_stats(base.model, base.train.seq_len).params_total);
  EXPECT_NEAR(one.compute_ms, flat.compute_ms + 10.0, 1e-9);
  EXPECT_NEAR(one.optimizer_ms, params * 1e-9 * 1e3, 1e-9);
  // Four micro-batches of 2: four overheads, the same arithmetic.
  const train::Prediction four = train::predict_layout(base, {1, 1, 1, 0, 2, 4, "none"}, test_cluster(), rates);
  EXPECT_NEAR(four.compute_ms, flat.compute_ms + 40.0, 1e-9);
  // ZeRO 1 over dp 2: each rank updates half of the parameters.
  const train::Prediction z1 = train::predict_layout(base, {2, 1, 1, 1, 4, 1, "none"}, test_cluster(), rates);
  EXPECT_NEAR(z1.optimizer_ms, one.optimizer_ms / 2, 1e-9);
}

class ClusterFile : public ::testing::Test {
 protected:
  // A file of its own per call (a test may hold two at once).
  std::string write(const std::string& text) {
    const fs::path path = fs::temp_directory_path() / ("hydra_cluster_" + std::to_string(::getpid()) + "_" +
                                                       std::to_string(files_++) + ".yaml");
    std::ofstream(path) << text;
    return path.string();
  }
  int files_ = 0;
  const std::string good_ =
      "name: x\ngpus_per_node: 8\npeak_bf16_flops: 1e15\nhbm_bytes: 8e10\nintra_node_bandwidth: 3e11\n"
      "intra_node_latency: 5e-6\ninter_node_bandwidth: 4.5e10\ninter_node_latency: 1e-5\n";
  void expect_error(const std::string& text, const std::string& needle) {
    const std::string path = write(text);
    try {
      launcher::load_cluster(path);
      FAIL() << "accepted: " << text;
    } catch (const common::ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
};

TEST_F(ClusterFile, ShippedFilesLoad) {
  for (const char* name : {"h100-8x-ib400", "h200-1x", "cpu-2core", "a100-8x-selene"}) {
    const train::Cluster c =
        launcher::load_cluster(std::string(HYDRA_SOURCE_DIR) + "/configs/clusters/" + name + ".yaml");
    EXPECT_EQ(c.name, name);
  }
  EXPECT_EQ(launcher::load_cluster(write(good_)).gpus_per_node, 8);
}

TEST_F(ClusterFile, CalibrationOfAnotherDtypeOrModelIsRefused) {
  const std::string path = write(
      "{\"world\": 1, \"accumulation\": 1, \"flops_per_token\": 1000, \"dtype\": \"bf16\", \"global_batch\": 8, "
      "\"seq_len\": 64, \"step_ms\": 100, \"phase_ms\": {\"gradient reduction and optimizer step\": 20}}");
  // The model's FLOPs a token by tensor parallelism (the vocabulary pads to 128 x tp).
  const auto flops = [](int tp) { return tp == 1 ? 1000.0 : 1000.0 + tp; };
  const train::CalibrationPoint p = launcher::load_calibration_point(path, flops, "bf16");
  EXPECT_DOUBLE_EQ(p.tokens, 512);
  EXPECT_DOUBLE_EQ(p.forward_backward_s, 0.08);
  EXPECT_DOUBLE_EQ(p.optimizer_s, 0.02);
  EXPECT_EQ(p.tp_slice, 1);
  const std::string slice = write(
      "{\"world\": 1, \"tp_slice\": 2, \"accumulation\": 1, \"flops_per_token\": 1002, \"dtype\": \"bf16\", "
      "\"global_batch\": 8, \"seq_len\": 64, \"step_ms\": 60, \"phase_ms\": {}}");
  EXPECT_EQ(launcher::load_calibration_point(slice, flops, "bf16").tp_slice, 2);
  const auto other = [](int tp) { return 2000.0 + tp; };
  for (const auto& [fpt, dtype, needle] :
       {std::tuple<std::function<double(int)>, std::string, std::string>{flops, "fp32", "dtype 'bf16'"},
        {other, "bf16", "flops_per_token 1000"}}) {
    try {
      launcher::load_calibration_point(path, fpt, dtype);
      FAIL() << "accepted: " << needle;
    } catch (const common::ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
}

TEST_F(ClusterFile, StrictChecks) {
  expect_error(good_ + "nvlink: 1\n", "unknown key 'nvlink'");
  expect_error(good_.substr(good_.find('\n') + 1), "missing key 'name'");
  std::string zero = good_;
  zero.replace(zero.find("hbm_bytes: 8e10"), 15, "hbm_bytes: 0");
  expect_error(zero, "hbm_bytes must be positive");
  std::string text = good_;
  text.replace(text.find("inter_node_latency: 1e-5"), 24, "inter_node_latency: fast");
  expect_error(text, "inter_node_latency must be a number");
}

// Anchoring (issue 18): Megatron-LM's PTD-P paper (Narayanan et al. 2021, arXiv:2104.04473,
// Table 1) trained GPT models on Selene (configs/clusters/a100-8x-selene.yaml) with tensor,
// pipeline and data parallelism and full activation recompute, sequence 2048, vocabulary 51,200,
// and reports teraFLOP/s per GPU counted as 96 B s l h^2 (1 + s/6h + V/16lh) a step. Each row
// as a HYDRA config: every layer `mha`, the SwiGLU width 8h/3 (the same 8h^2 weights a layer as
// GPT's 4h MLP), tied embeddings, micro-batches of one sequence, recompute `layer`. The rate R
// is the fraction of the peak that hydra's own `1b` dense step reaches on an H200 (557 of 989
// TFLOP/s, docs/SCALING.md) times the A100's 312: the cluster's hardware figures and our
// measured efficiency, nothing fitted to the paper. The predicted step must be within 20% of the
// paper's (its reported rate turned back into seconds) for every row, 1.7B to 1T parameters on
// 32 to 3072 GPUs. Printed for docs/SCALING.md, with
// the error R = 137 TFLOP/s would give (the paper's own 1.7B data-parallel row as calibration).
struct PtdpRow {
  double billions;
  int heads, hidden, layers, tp, pp, gpus, batch;
  double tflops_per_gpu;
};

TEST(PlanAnchor, MegatronPtdpTable1WithinTwentyPercent) {
  const std::vector<PtdpRow> rows = {{1.7, 24, 2304, 24, 1, 1, 32, 512, 137},     {3.6, 32, 3072, 30, 2, 1, 64, 512, 138},
                                     {7.5, 32, 4096, 36, 4, 1, 128, 512, 142},    {18.4, 48, 6144, 40, 8, 1, 256, 1024, 135},
                                     {39.1, 64, 8192, 48, 8, 2, 512, 1536, 138},  {76.1, 80, 10240, 60, 8, 4, 1024, 1792, 140},
                                     {145.6, 96, 12288, 80, 8, 8, 1536, 2304, 148},
                                     {310.1, 128, 16384, 96, 8, 16, 1920, 2160, 155}, {529.6, 128, 20480, 105, 8, 35, 2520, 2520, 163},
                                     {1008.0, 160, 25600, 128, 8, 64, 3072, 3072, 163}};
  const train::Cluster selene =
      launcher::load_cluster(std::string(HYDRA_SOURCE_DIR) + "/configs/clusters/a100-8x-selene.yaml");
  const train::PlanRates rates = flops_only(557.0 / 989.0 * selene.peak_flops), from_paper = flops_only(137e12);
  const double s = 2048, V = 51200;
  std::printf("PTD-P row | layout | paper s/step | predicted s (compute, tp, pp, dp, bubble) | error | at R 137\n");
  for (const PtdpRow& r : rows) {
    const launcher::Config c = launcher::load_config(
        std::string(HYDRA_SOURCE_DIR) + "/configs/tiny.yaml",
        {"model.dim=" + std::to_string(r.hidden), "model.heads=" + std::to_string(r.heads),
         "model.kv_heads=" + std::to_string(r.heads), "model.pattern=[mha]",
         "model.macro_blocks=" + std::to_string(r.layers), "model.mlp_ratio=2.6666666666666665",
         "model.vocab_size=51200", "model.tie_embeddings=true", "model.mod.enabled=false", "model.mor.recursions=1",
         "train.dtype=bf16", "train.device=cuda", "train.seq_len=2048", "train.global_batch=" + std::to_string(r.batch)},
        launcher::BuildCheck::kAnyBuild);
    const int dp = r.gpus / (r.tp * r.pp);
    const train::Layout layout{dp, r.tp, r.pp, 0, 1, r.batch / dp, "layer"};
    const train::Prediction p = train::predict_layout(c, layout, selene, rates);
    const double h = r.hidden, l = r.layers;
    const double paper_s = 96 * r.batch * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h)) / (r.tflops_per_gpu * 1e12 * r.gpus);
    const double error = p.step_ms / 1e3 / paper_s - 1;
    const double error_137 = train::predict_layout(c, layout, selene, from_paper).step_ms / 1e3 / paper_s - 1;
    std::printf("%.1fB | %s | %.2f | %.2f (%.2f, %.2f, %.2f, %.2f, %.2f)%s | %+.1f%% | %+.1f%%\n", r.billions,
                layout.name().c_str(), paper_s, p.step_ms / 1e3, p.compute_ms / 1e3, p.tp_comm_ms / 1e3,
                p.pp_comm_ms / 1e3, p.dp_exposed_ms / 1e3, p.bubble_ms / 1e3,
                p.feasible ? "" : (" [" + p.reason + "]").c_str(), 100 * error, 100 * error_137);
    EXPECT_TRUE(p.feasible) << r.billions << "B: " << p.reason;
    EXPECT_LT(std::abs(error), 0.20) << r.billions << "B " << layout.name();
  }
}

}  // namespace
