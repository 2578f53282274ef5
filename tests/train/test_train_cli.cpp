// `hydra train` end to end on a small model and a small corpus (bytes tokenizer), as a user
// runs it: exact resume, resume past a save that died, fine-tuning init, and bad inputs.
// Every run is a real `hydra` process; the reference is the uninterrupted run.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "tests/train/train_sandbox.h"

namespace {

namespace fs = std::filesystem;
using hydra::test::run_hydra;

struct TrainCli : hydra::test::SandboxTest<TrainCli> {
  static constexpr const char* kTag = "hydra_train_cli";
  static constexpr int kSteps = 6;

  // `hydra train` of the sandbox's config, one process, with extra arguments.
  static hydra::test::HydraRun train(const std::string& name, const std::vector<std::string>& extra = {}) {
    return sandbox()->train(name, 0, {}, extra);
  }

  // step -> the row's training fields (loss, aux_loss, lr, grad_norm), bit for bit.
  static std::map<int, std::string> training_rows(const std::string& name) {
    std::map<int, std::string> rows;
    for (const auto& [step, row] : sandbox()->metrics_rows(name)) rows[step] = hydra::test::TrainSandbox::training_fields(row);
    return rows;
  }
};

TEST_F(TrainCli, ResumeIsBitIdenticalToTheUninterruptedRun) {
  ASSERT_EQ(train("straight").exit_code, 0);
  const auto first = train("split", {"--set", "train.stop_at_step=3"});
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("stopped at step 3"), std::string::npos) << first.output;
  const auto second = train("split", {"--resume", "latest"});
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("resume:"), std::string::npos) << second.output;

  const auto straight = training_rows("straight");
  const auto split = training_rows("split");
  ASSERT_EQ(straight.size(), 6u);
  ASSERT_EQ(split.size(), 6u);  // the resumed run continues the same metrics file
  for (const auto& [step, fields] : straight) EXPECT_EQ(split.at(step), fields) << "step " << step;
}

TEST_F(TrainCli, ResumeLatestSkipsASaveThatDied) {
  ASSERT_EQ(train("killed", {"--set", "checkpoint.every=2", "--set", "checkpoint.keep=5",
                             "--set", "train.stop_at_step=4"}).exit_code, 0);
  // What a SIGKILL in the middle of saving step 6 leaves: a temporary directory with a
  // partial file, and (killed after the rename) a directory without its commit marker.
  const fs::path ckpt = root() / "killed" / "ckpt";
  fs::create_directories(ckpt / "step_00000006.tmp");
  std::ofstream(ckpt / "step_00000006.tmp" / "rank_00000.h5") << "partial";
  fs::copy(ckpt / "step_00000004", ckpt / "step_00000005", fs::copy_options::recursive);
  fs::remove(ckpt / "step_00000005" / "COMMIT");
  const auto resumed = train("killed", {"--resume", "latest"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("step_00000004 at step 4"), std::string::npos) << resumed.output;
  ASSERT_EQ(train("killed_ref").exit_code, 0);
  EXPECT_EQ(training_rows("killed").at(6), training_rows("killed_ref").at(6));
}

TEST_F(TrainCli, InitFromLoadsWeightsWithAFreshOptimizerAndDataPosition) {
  ASSERT_EQ(train("base").exit_code, 0);
  const std::string ckpt = (root() / "base" / "ckpt" / "step_00000006").string();
  const auto tuned = train("tuned", {"--init-from", ckpt, "--set", "train.steps=2"});
  ASSERT_EQ(tuned.exit_code, 0) << tuned.output;
  EXPECT_NE(tuned.output.find("init-from"), std::string::npos);
  // Starting from trained weights, the first loss is far below a fresh model's (ln 256 = 5.5).
  const double loss = hydra::test::TrainSandbox::loss_of(sandbox()->metrics_rows("tuned").at(1));
  const double fresh_loss = hydra::test::TrainSandbox::loss_of(sandbox()->metrics_rows("base").at(1));
  EXPECT_LT(loss, fresh_loss - 0.3) << "init-from loss " << loss << " vs fresh " << fresh_loss;
}

TEST_F(TrainCli, BadInputsExitThreeNamingTheCulprit) {
  auto run = train("bad_data", {"--set", "data.path=" + (root() / "nope").string()});
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_NE(run.output.find((root() / "nope").string()), std::string::npos) << run.output;

  // A corrupted shard header.
  fs::copy(root() / "tokens", root() / "tokens_bad", fs::copy_options::recursive);
  for (const auto& entry : fs::directory_iterator(root() / "tokens_bad")) {
    if (entry.path().filename().string().rfind("train_", 0) != 0) continue;
    std::fstream f(entry.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(0);
    f.write("XXXX", 4);
  }
  run = train("bad_shard", {"--set", "data.path=" + (root() / "tokens_bad").string()});
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_NE(run.output.find("train_000000"), std::string::npos) << run.output;

  // A truncated checkpoint, and a checkpoint of another model shape.
  ASSERT_EQ(train("src").exit_code, 0);
  const fs::path ckpt = root() / "src" / "ckpt" / "step_00000006";
  run = train("other_shape", {"--init-from", ckpt.string(), "--set", "model.dim=64"});
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_NE(run.output.find("another model shape"), std::string::npos) << run.output;
  // ... naming the setting behind the shapes, from the checkpoint's stored config.
  EXPECT_NE(run.output.find("model.dim: 32 in the checkpoint, 64 now"), std::string::npos) << run.output;
  // CCQA's layout, whose default changed: a head_dim checkpoint (the sandbox names it) under heads.
  run = train("other_layout", {"--init-from", ckpt.string(), "--set", "model.ccqa.compress=heads", "--set",
                               "model.ccqa.compression=2"});
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_NE(run.output.find("model.ccqa.compress: head_dim in the checkpoint, heads now"), std::string::npos)
      << run.output;
  // hydra eval and hydra generate load weights the same way.
  run = run_hydra({"eval", "--config", (root() / "run.yaml").string(), "--set",
                   "data.path=" + (root() / "tokens").string(), "--set", "model.ccqa.compress=heads", "--set",
                   "model.ccqa.compression=2", "--checkpoint", ckpt.string()},
                  (root() / "other_layout_eval.log").string());
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_NE(run.output.find("model.ccqa.compress: head_dim in the checkpoint, heads now"), std::string::npos)
      << run.output;
  fs::resize_file(ckpt / "rank_00000.h5", fs::file_size(ckpt / "rank_00000.h5") / 2);
  run = train("truncated", {"--init-from", ckpt.string()});
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_NE(run.output.find("rank_00000.h5"), std::string::npos) << run.output;
}

// train.cuda_graphs: on where the step cannot be captured (here: on the CPU) refuses to start,
// naming the key and why; auto (the default) trains eagerly without a word.
TEST_F(TrainCli, CudaGraphsOnWhereTheyCannotBeCapturedExitsTwo) {
  const auto run = train("graphs_on_cpu", {"--set", "train.cuda_graphs=on"});
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_NE(run.output.find("train.cuda_graphs: on, but the step cannot be captured: train.device is cpu"),
            std::string::npos)
      << run.output;
  EXPECT_FALSE(fs::exists(root() / "graphs_on_cpu" / "metrics.jsonl")) << "refused before the first step";
}

TEST_F(TrainCli, CkptInspectVerifiesAndCountsParameters) {
  ASSERT_EQ(train("inspect").exit_code, 0);
  const fs::path ckpt = root() / "inspect" / "ckpt" / "step_00000006";
  const auto out = (root() / "inspect" / "inspect.log").string();
  auto run = run_hydra({"ckpt", "inspect", ckpt.string(), "--json"}, out);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("\"step\": 6,"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("\"verified\": true"), std::string::npos) << run.output;
  // The parameter count equals the model's, as `hydra info` computes it from the config.
  const auto info = run_hydra({"info", "--config", (root() / "run.yaml").string(), "--json"}, out + ".info");
  const size_t at = info.output.find("\"params_total\": ");
  ASSERT_NE(at, std::string::npos) << info.output;
  const std::string count = info.output.substr(at + 16, info.output.find(',', at) - at - 16);
  EXPECT_NE(run.output.find("\"parameters\": " + count + ","), std::string::npos) << count << "\n" << run.output;

  // Damage: flip bytes in the middle of the rank file; inspect says so and exits 3.
  const fs::path file = ckpt / "rank_00000.h5";
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(file) / 2));
    f.write("\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8", 8);
  }
  run = run_hydra({"ckpt", "inspect", ckpt.string()}, out);
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_NE(run.output.find("rank_00000.h5"), std::string::npos) << run.output;
}

TEST_F(TrainCli, NonFiniteStepIsSkippedAndCountedOrHalts) {
  auto run = train("nan_skip", {"--set", "train.inject_nonfinite_step=3"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::ifstream in(root() / "nan_skip" / "metrics.jsonl");
  std::vector<std::string> rows;
  for (std::string line; std::getline(in, line);) rows.push_back(line);
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_NE(rows[1].find("\"skipped\": 0"), std::string::npos) << rows[1];
  EXPECT_NE(rows[2].find("\"grad_norm\": null"), std::string::npos) << rows[2];  // NaN is null in JSON
  EXPECT_NE(rows[5].find("\"skipped\": 1"), std::string::npos) << rows[5];
  // The skipped update left the weights finite: every later row has a finite gradient norm.
  EXPECT_EQ(rows[5].find("\"grad_norm\": null"), std::string::npos) << rows[5];

  run = train("nan_halt", {"--set", "train.inject_nonfinite_step=2", "--set", "train.on_nonfinite=halt"});
  EXPECT_EQ(run.exit_code, 4) << run.output;
  EXPECT_NE(run.output.find("at step 2"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("train.on_nonfinite: halt"), std::string::npos) << run.output;

  // Rows at steps 1, 4 and 6 only: step 2's numbers are read late (after step 3 is queued),
  // yet its warning names it, the row of step 4 counts it, and a halt names step 2.
  run = train("nan_skip_late", {"--set", "train.inject_nonfinite_step=2", "--set", "log.every=4"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("step 2: non-finite loss or gradient, step skipped"), std::string::npos) << run.output;
  const auto late = sandbox()->metrics_rows("nan_skip_late");
  ASSERT_EQ(late.size(), 3u);
  EXPECT_NE(late.at(1).find("\"skipped\": 0"), std::string::npos) << late.at(1);
  EXPECT_NE(late.at(4).find("\"skipped\": 1"), std::string::npos) << late.at(4);
  EXPECT_NE(late.at(6).find("\"skipped\": 1"), std::string::npos) << late.at(6);
  run = train("nan_halt_late", {"--set", "train.inject_nonfinite_step=2", "--set", "train.on_nonfinite=halt",
                                "--set", "log.every=4"});
  EXPECT_EQ(run.exit_code, 4) << run.output;
  EXPECT_NE(run.output.find("at step 2 (train.on_nonfinite: halt)"), std::string::npos) << run.output;
  EXPECT_EQ(sandbox()->metrics_rows("nan_halt_late").size(), 1u);  // step 1's row only
}

// SIGTERM mid-run: exit 75 with a checkpoint; the resumed run continues the loss curve of an
// uninterrupted one exactly.
TEST_F(TrainCli, SigtermSavesExitsSeventyFiveAndResumesExactly) {
  const fs::path dir = root() / "preempt";
  const std::string args = std::string("train --config ") + (root() / "run.yaml").string() +
                           " --set train.steps=100000 --set checkpoint.dir=" + (dir / "ckpt").string() +
                           " --set log.jsonl=" + (dir / "metrics.jsonl").string();
  // Start, wait for the third metrics row, send SIGTERM, report the exit code.
  const auto [status, log] = sandbox()->run_and_signal("preempt", "'" HYDRA_BIN "' " + args, 3, "kill -TERM $pid",
                                                       "kill -9 $pid");
  ASSERT_TRUE(WIFEXITED(status)) << log;
  ASSERT_EQ(WEXITSTATUS(status), 75) << log;
  EXPECT_NE(log.find("preempted by a signal"), std::string::npos) << log;
  const auto rows = training_rows("preempt");
  const int stopped = rows.rbegin()->first;
  ASSERT_TRUE(fs::exists(dir / "ckpt" / ("step_" + std::string(8 - std::to_string(stopped).size(), '0') +
                                         std::to_string(stopped)) / "COMMIT"));
  const std::string stop = "train.stop_at_step=" + std::to_string(stopped + 3);
  const auto resumed = train("preempt", {"--resume", "latest", "--set", "train.steps=100000", "--set", stop});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  ASSERT_EQ(train("preempt_ref", {"--set", "train.steps=100000", "--set", stop}).exit_code, 0);
  const auto ref = training_rows("preempt_ref");
  const auto got = training_rows("preempt");
  ASSERT_EQ(got.size(), ref.size());
  for (const auto& [step, fields] : ref) EXPECT_EQ(got.at(step), fields) << "step " << step;
}

// `--resume latest` skips a damaged newest checkpoint, says so, and continues exactly from
// the previous one; an explicitly named damaged checkpoint is an error (exit 3).
TEST_F(TrainCli, ResumeLatestFallsBackPastADamagedCheckpoint) {
  const std::vector<std::string> every2 = {"--set", "checkpoint.every=2", "--set", "checkpoint.keep=5"};
  ASSERT_EQ(train("damaged", every2).exit_code, 0);
  const fs::path newest = root() / "damaged" / "ckpt" / "step_00000006";
  hydra::test::TrainSandbox::damage(newest / "rank_00000.h5");
  fs::remove(root() / "damaged" / "metrics.jsonl");  // the resumed run's rows only
  const auto resumed = train("damaged", {"--resume", "latest"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("skipping " + newest.string()), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find("step_00000004 at step 4"), std::string::npos) << resumed.output;
  ASSERT_EQ(train("damaged_ref").exit_code, 0);
  const auto got = training_rows("damaged");
  const auto want = training_rows("damaged_ref");
  ASSERT_EQ(got.size(), 2u);  // steps 5 and 6
  for (const auto& [step, fields] : got) EXPECT_EQ(fields, want.at(step)) << "step " << step;

  // The resumed run saved step 6 afresh; damage it again, then name it explicitly.
  hydra::test::TrainSandbox::damage(newest / "rank_00000.h5");
  const auto named = train("damaged_named", {"--resume", newest.string()});
  EXPECT_EQ(named.exit_code, 3) << named.output;
  EXPECT_NE(named.output.find("rank_00000.h5"), std::string::npos) << named.output;
}

// A real SIGKILL while a checkpoint is being written (its step_N.tmp directory exists):
// `--resume latest` loads the previous complete checkpoint and the run continues exactly.
TEST_F(TrainCli, SigkillDuringASaveResumesFromThePreviousCheckpoint) {
  const fs::path dir = root() / "sigkill";
  fs::create_directories(dir / "ckpt");
  // A 50k vocabulary makes each save write ~26 MB: a window wide enough to kill it in.
  const std::vector<std::string> sets = {"--set", "model.vocab_size=50257", "--set", "train.steps=100000",
                                         "--set", "checkpoint.every=2", "--set", "checkpoint.keep=3"};
  std::string args = std::string("train --config ") + (root() / "run.yaml").string() + " --set checkpoint.dir=" +
                     (dir / "ckpt").string() + " --set log.jsonl=" + (dir / "metrics.jsonl").string();
  for (const auto& a : sets) args += " " + a;
  std::ofstream(dir / "run.sh") << "'" HYDRA_BIN "' " << args << " > " << (dir / "out.log").string() << " 2>&1 &\n"
                                << "pid=$!\n"
                                << "for i in $(seq 20000); do\n"
                                // The second save or later, caught in the middle.
                                << "  if ls -d " << (dir / "ckpt").string() << "/step_*.tmp 2>/dev/null | grep -qv step_00000002; then\n"
                                << "    kill -9 $pid; break\n"
                                << "  fi\n"
                                << "  sleep 0.002\n"
                                << "done\n"
                                << "( sleep 120; kill -9 $pid ) >/dev/null 2>&1 & guard=$!\n"
                                << "wait $pid; rc=$?\n"
                                << "kill $guard 2>/dev/null\n"
                                << "exit $rc\n";
  const int status = std::system(("bash " + (dir / "run.sh").string()).c_str());
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 128 + 9) << "the run was not killed mid-save";
  bool partial = false;
  for (const auto& entry : fs::directory_iterator(dir / "ckpt")) partial |= entry.path().extension() == ".tmp";
  ASSERT_TRUE(partial) << "no half-written checkpoint left behind";

  // The newest checkpoint with its commit marker is what resume must load.
  int loaded = 0;
  for (const auto& entry : fs::directory_iterator(dir / "ckpt")) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension().empty() && fs::exists(entry.path() / "COMMIT")) loaded = std::max(loaded, std::stoi(name.substr(5)));
  }
  ASSERT_GE(loaded, 2);
  std::vector<std::string> resume = sets;
  const std::string stop = "train.stop_at_step=" + std::to_string(loaded + 2);
  resume.insert(resume.end(), {"--resume", "latest", "--set", stop});
  const auto resumed = train("sigkill", resume);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("at step " + std::to_string(loaded) + ","), std::string::npos) << resumed.output;
  std::vector<std::string> ref = sets;
  ref.insert(ref.end(), {"--set", stop});
  ASSERT_EQ(train("sigkill_ref", ref).exit_code, 0);
  const auto got = training_rows("sigkill");
  const auto want = training_rows("sigkill_ref");
  for (const auto& [step, fields] : want) EXPECT_EQ(got.at(step), fields) << "step " << step;
}

// `hydra ckpt consolidate`: one h5py-readable file equal to the checkpoint's weights.
TEST_F(TrainCli, ConsolidateWritesEveryWeightWhole) {
  ASSERT_EQ(train("consolidate", {"--set", "parallel.zero_stage=1"}).exit_code, 0);
  const fs::path ckpt = root() / "consolidate" / "ckpt" / "step_00000006";
  const std::string out = (root() / "consolidate" / "weights.h5").string();
  const auto run = run_hydra({"ckpt", "consolidate", ckpt.string(), "--output", out}, out + ".log");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_FALSE(fs::exists(out + ".tmp"));
  const std::string cmd = "/usr/bin/python3 " HYDRA_SOURCE_DIR "/tests/checkpoint/compare_consolidated.py " +
                          ckpt.string() + " " + out;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  // A rank file that disagrees with the index (bytes appended): exit 3 naming it, and neither
  // the output nor a temporary is left behind.
  std::ofstream(ckpt / "rank_00000.h5", std::ios::app | std::ios::binary) << std::string(64, 'x');
  const std::string bad = (root() / "consolidate" / "bad.h5").string();
  const auto refused = run_hydra({"ckpt", "consolidate", ckpt.string(), "--output", bad}, bad + ".log");
  EXPECT_EQ(refused.exit_code, 3) << refused.output;
  EXPECT_NE(refused.output.find("rank_00000.h5"), std::string::npos) << refused.output;
  EXPECT_FALSE(fs::exists(bad));
  EXPECT_FALSE(fs::exists(bad + ".tmp"));
}

}  // namespace
