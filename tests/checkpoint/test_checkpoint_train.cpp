// Checkpoints of real `hydra train` runs (CPU, MPI backend, 2 ranks):
//  - checkpoint.async writes the very same tensor bytes as a synchronous save of the same
//    steps (the host snapshot is taken at the step boundary, not after later steps changed
//    the weights), commits every checkpoint, leaves the losses untouched and reports the
//    stall in the metrics rows; a pending async save is committed before a preempted run
//    exits 75;
//  - `hydra ckpt consolidate` of a tp2 checkpoint equals its slices placed by their offsets
//    (gathered independently with h5py) and the consolidated weights of the same run on one
//    process (within 1e-4, as the training itself).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/h5_file.h"
#include "tests/train/train_sandbox.h"

namespace {

namespace fs = std::filesystem;
using hydra::checkpoint::H5File;
using hydra::test::TrainSandbox;

struct CheckpointTrain : hydra::test::SandboxTest<CheckpointTrain> {
  static constexpr const char* kTag = "hydra_ckpt_train";
  static constexpr int kSteps = 4;

  // Every dataset under `group` (datasets carry a crc32 attribute), as HDF5 paths.
  static void datasets(const H5File& f, const std::string& group, std::vector<std::string>& out) {
    for (const auto& name : f.list(group)) {
      const std::string object = (group == "/" ? "" : group) + "/" + name;
      if (f.has_attr(object, "crc32")) {
        out.push_back(object);
      } else {
        datasets(f, object, out);
      }
    }
  }

  // The same datasets with the same dtype, shape, bytes and placement attributes.
  static void expect_same_tensors(const fs::path& a, const fs::path& b) {
    const H5File fa = H5File::open_read(a.string());
    const H5File fb = H5File::open_read(b.string());
    std::vector<std::string> na, nb;
    datasets(fa, "/", na);
    datasets(fb, "/", nb);
    ASSERT_EQ(na, nb) << a << " vs " << b;
    ASSERT_FALSE(na.empty()) << a;
    for (const auto& object : na) {
      const at::Tensor ta = fa.read_tensor(object);
      const at::Tensor tb = fb.read_tensor(object);
      ASSERT_EQ(ta.scalar_type(), tb.scalar_type()) << a << " " << object;
      ASSERT_EQ(ta.sizes(), tb.sizes()) << a << " " << object;
      EXPECT_EQ(std::memcmp(ta.data_ptr(), tb.data_ptr(), ta.numel() * ta.element_size()), 0) << a << " " << object;
      for (const char* attr : {"global_shape", "global_offset", "flat_range"}) {
        if (fa.has_attr(object, attr)) EXPECT_EQ(fa.attr_ints(object, attr), fb.attr_ints(object, attr)) << object;
      }
    }
  }
};

TEST_F(CheckpointTrain, AsyncSaveWritesTheSameTensorsAsSyncSave) {
  const std::vector<std::string> sets = {"parallel.tp=2", "checkpoint.every=1", "checkpoint.keep=10"};
  auto async_sets = sets;
  async_sets.push_back("checkpoint.async=true");
  const auto sync = sandbox()->train("sync", 2, sets);
  ASSERT_EQ(sync.exit_code, 0) << sync.output;
  // Each write starts 600 ms late, so the next steps change the weights and moments while it
  // is pending: a snapshot that aliased them instead of copying would store later values.
  ::setenv("HYDRA_CKPT_WRITE_DELAY_MS", "600", 1);
  const auto async = sandbox()->train("async", 2, async_sets);
  ::unsetenv("HYDRA_CKPT_WRITE_DELAY_MS");
  ASSERT_EQ(async.exit_code, 0) << async.output;
  EXPECT_NE(async.output.find("writing in the background"), std::string::npos) << async.output;
  for (int step = 1; step <= kSteps; ++step) {
    const std::string dir = "step_0000000" + std::to_string(step);
    const fs::path s = root() / "sync" / "ckpt" / dir, a = root() / "async" / "ckpt" / dir;
    ASSERT_TRUE(fs::exists(a / "COMMIT")) << a;
    for (const char* file : {"index.h5", "rank_00000.h5", "rank_00001.h5"}) expect_same_tensors(s / file, a / file);
  }
  EXPECT_FALSE(fs::exists(root() / "async" / "ckpt" / "step_00000004.tmp"));
  const auto want = sandbox()->metrics_rows("sync");
  const auto got = sandbox()->metrics_rows("async");
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [step, row] : want) {
    EXPECT_EQ(TrainSandbox::training_fields(got.at(step)), TrainSandbox::training_fields(row)) << "step " << step;
  }
  // Row 2 follows the save of step 1 (its snapshot); row 3 also the first completed write.
  EXPECT_NE(got.at(2).find("\"ckpt_stall_ms\": "), std::string::npos) << got.at(2);
  EXPECT_NE(got.at(3).find("\"ckpt_write_ms\": "), std::string::npos) << got.at(3);
  EXPECT_NE(want.at(2).find("\"ckpt_write_ms\": "), std::string::npos) << want.at(2);
  // The write of step 1, reported with the save of step 2, took at least its delay: the
  // background time is measured from the snapshot to the file on disk.
  const std::string write = got.at(3).substr(got.at(3).find("\"ckpt_write_ms\": ") + 17);
  EXPECT_GE(std::stod(write), 600.0) << got.at(3);
  // Row 3's stall is the wait for that write plus the host copy of step 2, reported apart.
  const auto number = [](const std::string& row, const std::string& key) {
    const size_t at = row.find("\"" + key + "\": ");
    return at == std::string::npos ? -1.0 : std::stod(row.substr(at + key.size() + 4));
  };
  const double copy = number(got.at(3), "ckpt_copy_ms"), stall = number(got.at(3), "ckpt_stall_ms");
  EXPECT_GE(copy, 0.0) << got.at(3);
  EXPECT_LT(copy, stall) << got.at(3);
  EXPECT_EQ(number(want.at(3), "ckpt_copy_ms"), -1.0) << "synchronous saves copy nothing apart: " << want.at(3);
}

// SIGUSR1 to one rank while an async write is pending (each write starts 300 ms late): every
// rank exits 75 only after the pending save and the one of the preemption step are committed
// (no step_N.tmp left), and the resumed run continues the uninterrupted run bit for bit.
TEST_F(CheckpointTrain, AsyncSavePendingAtPreemptionIsCommittedBeforeExit) {
  const std::string name = "async_preempt";
  const fs::path dir = root() / name;
  const std::vector<std::string> sets = {"parallel.dp=2", "parallel.zero_stage=1", "train.steps=100000",
                                         "checkpoint.every=1", "checkpoint.keep=2", "checkpoint.async=true"};
  std::string launch = "HYDRA_CKPT_WRITE_DELAY_MS=300 " + TrainSandbox::mpirun_prefix(2) + " '" HYDRA_BIN "' train --config " +
                       (root() / "run.yaml").string() + " --set checkpoint.dir=" + (dir / "ckpt").string() +
                       " --set log.jsonl=" + (dir / "metrics.jsonl").string();
  for (const auto& set : sets) launch += " --set " + set;
  const auto [status, log] = sandbox()->run_and_preempt_one_rank(name, launch, 3);
  ASSERT_TRUE(WIFEXITED(status)) << log;
  ASSERT_EQ(WEXITSTATUS(status), 75) << log;
  const int stopped = sandbox()->metrics_rows(name).rbegin()->first;
  const std::string newest = "step_" + std::string(8 - std::to_string(stopped).size(), '0') + std::to_string(stopped);
  EXPECT_TRUE(fs::exists(dir / "ckpt" / newest / "COMMIT")) << log;
  for (const auto& entry : fs::directory_iterator(dir / "ckpt")) {
    EXPECT_NE(entry.path().extension(), ".tmp") << entry.path() << " left uncommitted\n" << log;
  }
  auto resume_sets = sets;
  resume_sets.push_back("train.stop_at_step=" + std::to_string(stopped + 2));
  const auto resumed = sandbox()->train(name, 2, resume_sets, {"--resume", "latest"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  ASSERT_EQ(sandbox()->train("async_preempt_ref", 2, resume_sets).exit_code, 0);
  const auto got = sandbox()->metrics_rows(name);
  const auto want = sandbox()->metrics_rows("async_preempt_ref");
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [step, row] : want) {
    EXPECT_EQ(TrainSandbox::training_fields(got.at(step)), TrainSandbox::training_fields(row)) << "step " << step;
  }
}

TEST_F(CheckpointTrain, ConsolidatedTp2CheckpointEqualsItsSlicesAndTheOneProcessRun) {
  // 300 tokens: padded to 384 rows on one process and 512 under tp2; neither stores padding.
  const std::vector<std::string> vocab = {"model.vocab_size=300"};
  auto tp2 = vocab;
  tp2.push_back("parallel.tp=2");
  ASSERT_EQ(sandbox()->train("tp2", 2, tp2).exit_code, 0);
  ASSERT_EQ(sandbox()->train("tp1", 0, vocab).exit_code, 0);
  std::vector<std::string> outputs;
  for (const std::string name : {"tp2", "tp1"}) {
    const std::string out = (root() / name / "weights.h5").string();
    const auto run = hydra::test::run_hydra(
        {"ckpt", "consolidate", (root() / name / "ckpt" / "step_00000004").string(), "--output", out}, out + ".log");
    ASSERT_EQ(run.exit_code, 0) << run.output;
    outputs.push_back(out);
  }
  const std::string cmd = "/usr/bin/python3 " HYDRA_SOURCE_DIR "/tests/checkpoint/gather_slices.py " +
                          (root() / "tp2" / "ckpt" / "step_00000004").string() + " " + outputs[0];
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;

  const H5File got = H5File::open_read(outputs[0]);
  const H5File want = H5File::open_read(outputs[1]);
  const auto names = want.list("/model");
  ASSERT_GT(names.size(), 10u);
  ASSERT_EQ(got.list("/model"), names);
  EXPECT_EQ(got.dataset_shape("/model/embed.weight"), (std::vector<int64_t>{300, 32}));
  for (const auto& n : names) {
    const at::Tensor a = got.read_tensor("/model/" + n);
    const at::Tensor b = want.read_tensor("/model/" + n);
    ASSERT_EQ(a.sizes(), b.sizes()) << n;
    const double rel = (a - b).norm().item<double>() / std::max(b.norm().item<double>(), 1e-12);
    EXPECT_LE(rel, 1e-4) << n;
  }
}

}  // namespace
