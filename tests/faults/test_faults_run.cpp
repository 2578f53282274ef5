// The fault matrix, area "run" (docs/FAULTS.md): what `hydra train` checks before and while
// it runs — outputs it cannot write, a new run into an earlier run's outputs, a resume with
// settings the checkpoint fixes, a metrics file on a full disk. Each case runs the real
// binary and asserts the exit code, the message (key and path or value) and what is on disk.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/train/train_sandbox.h"

namespace {

namespace fs = std::filesystem;
using hydra::test::HydraRun;
using hydra::test::TrainSandbox;

// One small corpus per test process (ctest runs each case alone); 4 steps, a checkpoint
// every 2.
TrainSandbox& sandbox() {
  static TrainSandbox box("hydra_faults_run", 4);
  return box;
}

HydraRun train(const std::string& name, const std::vector<std::string>& sets = {},
               const std::vector<std::string>& extra = {}) {
  std::vector<std::string> all = {"checkpoint.every=2", "checkpoint.keep=5"};
  all.insert(all.end(), sets.begin(), sets.end());
  return sandbox().train(name, 0, all, extra);
}

// A scratch folder for cases that must stop before the data is read: they need no corpus
// (data.path does not exist; reaching it would be exit 3, not the expected 2).
struct Scratch {
  fs::path root = fs::temp_directory_path() / ("hydra_faults_run_scratch_" + std::to_string(::getpid()));
  Scratch() { fs::create_directories(root); }
  ~Scratch() { fs::remove_all(root); }

  HydraRun train(const std::vector<std::string>& sets) const {
    std::vector<std::string> args = {"train", "--config", std::string(HYDRA_SOURCE_DIR) + "/configs/tiny.yaml",
                                     "--set", "data.path=" + (root / "no_corpus").string(),
                                     "--set", "checkpoint.dir=" + (root / "ckpt").string(),
                                     "--set", "log.jsonl=" + (root / "metrics.jsonl").string()};
    for (const auto& set : sets) args.insert(args.end(), {"--set", set});
    return hydra::test::run_hydra(args, (root / "out.log").string());
  }
};

std::string read(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every file under `dir` (relative path -> size and hash of its bytes): what must be left
// untouched.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string bytes = read(entry.path());
    out[fs::relative(entry.path(), dir).string()] =
        std::to_string(bytes.size()) + " bytes, hash " + std::to_string(std::hash<std::string>()(bytes));
  }
  return out;
}

bool says(const HydraRun& run, const std::string& text) { return run.output.find(text) != std::string::npos; }

// The one entry of `dir` whose name starts with `prefix` ("" if none or several).
fs::path only_entry(const fs::path& dir, const std::string& prefix) {
  fs::path found;
  int count = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().rfind(prefix, 0) == 0) found = entry.path(), ++count;
  }
  return count == 1 ? found : fs::path();
}

TEST(FaultsRun, NewRunIntoUsedCheckpointDirIsRefused) {
  ASSERT_EQ(sandbox().prepare_run().exit_code, 0);
  ASSERT_EQ(train("used").exit_code, 0);
  const fs::path dir = sandbox().root() / "used";
  const auto before = snapshot(dir / "ckpt");
  const std::string metrics = read(dir / "metrics.jsonl");
  const HydraRun again = train("used", {"train.steps=2"});
  EXPECT_EQ(again.exit_code, 2) << again.output;
  EXPECT_TRUE(says(again, "checkpoint.dir " + (dir / "ckpt").string())) << again.output;
  EXPECT_TRUE(says(again, "step_00000002 ... step_00000004")) << again.output;
  EXPECT_TRUE(says(again, "--overwrite")) << again.output;
  EXPECT_EQ(snapshot(dir / "ckpt"), before);  // nothing pruned, overwritten or added
  EXPECT_EQ(read(dir / "metrics.jsonl"), metrics);
}

TEST(FaultsRun, NewRunIntoUsedMetricsFileIsRefused) {
  ASSERT_EQ(sandbox().prepare_run().exit_code, 0);
  ASSERT_EQ(train("rows").exit_code, 0);
  const fs::path dir = sandbox().root() / "rows";
  const std::string metrics = read(dir / "metrics.jsonl");
  const HydraRun again = train("rows", {"checkpoint.dir=" + (dir / "other_ckpt").string()});
  EXPECT_EQ(again.exit_code, 2) << again.output;
  EXPECT_TRUE(says(again, "log.jsonl " + (dir / "metrics.jsonl").string() + " holds 4 metrics rows")) << again.output;
  EXPECT_EQ(read(dir / "metrics.jsonl"), metrics);
  EXPECT_FALSE(fs::exists(dir / "metrics.jsonl.prev"));
  EXPECT_FALSE(fs::exists(dir / "other_ckpt" / "step_00000002"));
}

// --overwrite starts a new run, and moves the earlier one's checkpoints and metrics aside,
// byte for byte, instead of mixing with them.
TEST(FaultsRun, OverwriteMovesTheEarlierRunAside) {
  ASSERT_EQ(sandbox().prepare_run().exit_code, 0);
  ASSERT_EQ(train("over").exit_code, 0);
  const fs::path dir = sandbox().root() / "over";
  const auto old_ckpt = snapshot(dir / "ckpt");
  const std::string old_metrics = read(dir / "metrics.jsonl");
  const HydraRun again = train("over", {"train.steps=2"}, {"--overwrite"});
  ASSERT_EQ(again.exit_code, 0) << again.output;
  const fs::path aside = only_entry(dir / "ckpt", "replaced_");
  ASSERT_FALSE(aside.empty());
  EXPECT_EQ(snapshot(aside), old_ckpt);
  EXPECT_TRUE(says(again, aside.string())) << again.output;
  const fs::path old_rows = only_entry(dir, "metrics.jsonl.replaced_");
  ASSERT_FALSE(old_rows.empty());
  EXPECT_EQ(read(old_rows), old_metrics);
  // The new run alone: its step 2 kept, no step 4, two rows.
  EXPECT_TRUE(fs::exists(dir / "ckpt" / "step_00000002" / "COMMIT"));
  EXPECT_FALSE(fs::exists(dir / "ckpt" / "step_00000004"));
  EXPECT_EQ(sandbox().metrics_rows("over").size(), 2u);
}

TEST(FaultsRun, ResumeWithChangedSeedIsRefused) {
  ASSERT_EQ(sandbox().prepare_run().exit_code, 0);
  ASSERT_EQ(train("seed", {"train.stop_at_step=2"}).exit_code, 0);
  const fs::path dir = sandbox().root() / "seed";
  const auto before = snapshot(dir);
  const HydraRun resumed = train("seed", {"train.seed=7", "train.seq_len=16"}, {"--resume", "latest"});
  EXPECT_EQ(resumed.exit_code, 2) << resumed.output;
  EXPECT_TRUE(says(resumed, "train.seed: 1234 in the checkpoint, 7 now")) << resumed.output;
  EXPECT_TRUE(says(resumed, "train.seq_len: 32 in the checkpoint, 16 now")) << resumed.output;
  EXPECT_TRUE(says(resumed, (dir / "ckpt" / "step_00000002").string())) << resumed.output;
  EXPECT_FALSE(says(resumed, "resume: loading")) << "refused before loading\n" << resumed.output;
  auto after = snapshot(dir);
  after.erase("out.log");
  auto expected = before;
  expected.erase("out.log");
  EXPECT_EQ(after, expected);
}

// Keys the docs list as changeable are accepted on resume, and the metrics rows the resumed
// run recomputes (written after its checkpoint) are kept aside, not dropped.
TEST(FaultsRun, ResumeKeepsTheRowsItRecomputes) {
  ASSERT_EQ(sandbox().prepare_run().exit_code, 0);
  ASSERT_EQ(train("rewind").exit_code, 0);
  const fs::path dir = sandbox().root() / "rewind";
  fs::remove_all(dir / "ckpt" / "step_00000004");  // as if killed before its last save
  const auto old_rows = sandbox().metrics_rows("rewind");
  const HydraRun resumed =
      train("rewind", {"train.micro_batch=1", "log.every=1", "checkpoint.keep=4"}, {"--resume", "latest"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(says(resumed, "step_00000002 at step 2")) << resumed.output;
  EXPECT_EQ(sandbox().metrics_rows("rewind").size(), 4u);
  EXPECT_EQ(read(dir / "metrics.jsonl.superseded"), old_rows.at(3) + "\n" + old_rows.at(4) + "\n");
}

// `set` must stop the run at start: exit 2 with `message`, no metrics file, no probe left.
void expect_refused_at_start(const Scratch& scratch, const std::string& set, const std::string& message) {
  const HydraRun run = scratch.train({set});
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_TRUE(says(run, message)) << run.output;
  EXPECT_FALSE(fs::exists(scratch.root / "metrics.jsonl"));
  EXPECT_FALSE(fs::exists(scratch.root / "ckpt" / ".hydra_probe_rank0"));
}

TEST(FaultsRun, CheckpointDirIsAFile) {
  const Scratch scratch;
  const fs::path file = scratch.root / "a_file";
  std::ofstream(file) << "user data\n";
  expect_refused_at_start(scratch, "checkpoint.dir=" + file.string(),
                          "checkpoint.dir: " + file.string() + " exists and is not a directory");
  EXPECT_EQ(read(file), "user data\n");
}

TEST(FaultsRun, CheckpointDirUnderProc) {
  expect_refused_at_start(Scratch(), "checkpoint.dir=/proc/hydra_ckpt",
                          "checkpoint.dir: cannot create the directory /proc/hydra_ckpt");
}

TEST(FaultsRun, MetricsFileUnwritable) {
  expect_refused_at_start(Scratch(), "log.jsonl=/proc/hydra_logs/metrics.jsonl",
                          "log.jsonl: cannot create the directory /proc/hydra_logs");
}

// /dev/full: every write fails with ENOSPC, as on a full filesystem. Reached through a link,
// so that a trainer that renames or replaces its metrics file never touches /dev/full itself.
TEST(FaultsRun, MetricsOnAFullDiskStopTheRun) {
  ASSERT_EQ(sandbox().prepare_run().exit_code, 0);
  const fs::path link = sandbox().root() / "full" / "metrics.jsonl";
  fs::create_directories(link.parent_path());
  fs::create_symlink("/dev/full", link);
  const HydraRun run = train("full", {"train.steps=1"});
  EXPECT_EQ(run.exit_code, 4) << run.output;
  EXPECT_TRUE(says(run, "log.jsonl: cannot write the metrics file " + link.string() + ": No space left on device"))
      << run.output;
  EXPECT_FALSE(says(run, "internal error")) << run.output;
  EXPECT_TRUE(fs::is_symlink(link));
}

}  // namespace
