// The fault matrix, checkpoints (docs/FAULTS.md): damaged, truncated, missing and incomplete
// checkpoints given to `hydra ckpt inspect` and `hydra train --resume`, paths that are no
// checkpoint, and a disk that fills up during a save. Each case runs the real binary and
// checks the exit code, the message (naming the file, dataset or path) and what is on disk.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/train/train_sandbox.h"

namespace {

namespace fs = std::filesystem;
using hydra::test::HydraRun;
using hydra::test::run_hydra;
using hydra::test::TrainSandbox;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string file_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void flip_last_byte(const fs::path& file) {
  std::string bytes = file_bytes(file);
  bytes.back() = static_cast<char>(bytes.back() ^ 0xff);
  std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;
}

// A checkpoint.dir on which the next save does not fit: a small tmpfs mounted there (CI runs
// as root). A file-size limit (RLIMIT_FSIZE) is no substitute: Open MPI's start needs larger
// files than a checkpoint of this model, so hydra could not even start under it.
class FullDisk {
 public:
  // Room for `keep` (copied in) and not for another checkpoint of the same size (~1 MB).
  FullDisk(const fs::path& dir, const fs::path& keep) : dir_(dir) {
    fs::create_directories(dir);
    const std::string cmd = "mount -t tmpfs -o size=1400k tmpfs " + hydra::test::shell_quote(dir.string());
    mounted_ = std::system(cmd.c_str()) == 0;
    if (mounted_) fs::copy(keep, dir / keep.filename(), fs::copy_options::recursive);
  }
  ~FullDisk() {
    if (mounted_) (void)!std::system(("umount -l " + hydra::test::shell_quote(dir_.string())).c_str());
  }
  FullDisk(const FullDisk&) = delete;
  FullDisk& operator=(const FullDisk&) = delete;

  bool mounted() const { return mounted_; }
  // The user makes room.
  void free_space() {
    ASSERT_EQ(std::system(("mount -o remount,size=16m " + hydra::test::shell_quote(dir_.string())).c_str()), 0);
  }

 private:
  fs::path dir_;
  bool mounted_ = false;
};

// One sandbox for the suite and one committed checkpoint of step 2 (of 4) that each case
// copies before it damages or extends it.
struct FaultsCheckpoint : hydra::test::SandboxTest<FaultsCheckpoint> {
  static constexpr const char* kTag = "hydra_faults_ckpt";
  static constexpr int kSteps = 4;

  static void SetUpTestSuite() {
    SandboxTest::SetUpTestSuite();
    const HydraRun base = sandbox()->train("base", 0, {"train.stop_at_step=2"});
    ASSERT_EQ(base.exit_code, 0) << base.output;
  }
  static fs::path base_checkpoint() { return root() / "base" / "ckpt" / "step_00000002"; }

  // A copy of the base checkpoint under root/name.
  static fs::path copy_of_base(const std::string& name) {
    const fs::path dir = root() / name / "step_00000002";
    fs::remove_all(dir);
    fs::create_directories(dir.parent_path());
    fs::copy(base_checkpoint(), dir, fs::copy_options::recursive);
    return dir;
  }

  static HydraRun inspect(const fs::path& dir, bool json = false) {
    std::vector<std::string> args = {"ckpt", "inspect", dir.string()};
    if (json) args.push_back("--json");
    return run_hydra(args, (dir.parent_path() / (json ? "inspect_json.log" : "inspect.log")).string());
  }

  static HydraRun resume(const fs::path& dir, const std::string& tag) {
    return run_hydra({"train", "--config", (root() / "run.yaml").string(), "--set",
                      "checkpoint.dir=" + (root() / tag / "ckpt").string(), "--set",
                      "log.jsonl=" + (root() / (tag + ".jsonl")).string(), "--resume", dir.string()},
                     (root() / (tag + ".log")).string());
  }

  // `hydra train --resume latest` over `ckpt` (checkpoint.async as given).
  static HydraRun resume_latest(const fs::path& ckpt, bool async, const std::string& log) {
    return run_hydra({"train", "--config", (root() / "run.yaml").string(), "--set", "checkpoint.dir=" + ckpt.string(),
                      "--set", std::string("checkpoint.async=") + (async ? "true" : "false"), "--set",
                      "log.jsonl=" + (ckpt.parent_path() / (log + ".jsonl")).string(), "--resume", "latest"},
                     (ckpt.parent_path() / (log + ".log")).string());
  }

  // A save at step 4 onto a full disk exits 4 naming the file and the reason, leaves no partial
  // directory and the step-2 checkpoint intact; once there is room, --resume latest goes on
  // from step 2 and saves step 4.
  static void check_full_disk(const std::string& name, bool async) {
    const fs::path ckpt = root() / name / "ckpt";
    FullDisk disk(ckpt, base_checkpoint());
    ASSERT_TRUE(disk.mounted()) << "this case mounts a tmpfs and needs root (as in CI)";
    const HydraRun full = resume_latest(ckpt, async, "full");
    EXPECT_EQ(full.exit_code, 4) << full.output;  // not a crash at exit (139) nor "bad input" (3)
    EXPECT_TRUE(contains(full.output, "checkpoint of step 4 not saved")) << full.output;
    EXPECT_TRUE(contains(full.output, "step_00000004.tmp/rank_00000.h5")) << full.output;
    EXPECT_TRUE(contains(full.output, "No space left on device")) << full.output;
    EXPECT_TRUE(contains(full.output, "the last complete checkpoint is " + (ckpt / "step_00000002").string()))
        << full.output;
    EXPECT_FALSE(fs::exists(ckpt / "step_00000004.tmp"));
    EXPECT_FALSE(fs::exists(ckpt / "step_00000004"));
    EXPECT_EQ(file_bytes(ckpt / "step_00000002" / "rank_00000.h5"), file_bytes(base_checkpoint() / "rank_00000.h5"));

    disk.free_space();
    const HydraRun again = resume_latest(ckpt, async, "again");
    ASSERT_EQ(again.exit_code, 0) << again.output;
    EXPECT_TRUE(contains(again.output, "step_00000002 at step 2")) << again.output;
    EXPECT_TRUE(fs::exists(ckpt / "step_00000004" / "COMMIT"));
  }
};

// Issue #12: the last byte of a rank file flipped made inspect segfault inside HDF5 (139),
// and with --json abort with "double free or corruption" (134).
TEST_F(FaultsCheckpoint, InspectRankFileLastByteFlipped) {
  const fs::path dir = copy_of_base("last_byte");
  flip_last_byte(dir / "rank_00000.h5");
  const std::string damaged = file_bytes(dir / "rank_00000.h5");
  for (const bool json : {false, true}) {
    const HydraRun run = inspect(dir, json);
    EXPECT_EQ(run.exit_code, 3) << run.output;
    EXPECT_TRUE(contains(run.output, (dir / "rank_00000.h5").string())) << run.output;
    EXPECT_TRUE(contains(run.output, "checksum")) << run.output;
    EXPECT_TRUE(contains(run.output, json ? "\"verified\": false" : "verified    NO: ")) << run.output;
  }
  EXPECT_EQ(file_bytes(dir / "rank_00000.h5"), damaged);  // inspect only reads
}

// 64 bytes overwritten in the middle of the rank file (data or HDF5 metadata).
TEST_F(FaultsCheckpoint, InspectRankFileDamaged) {
  const fs::path dir = copy_of_base("rank_damaged");
  TrainSandbox::damage(dir / "rank_00000.h5");
  const HydraRun run = inspect(dir, true);
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_TRUE(contains(run.output, (dir / "rank_00000.h5").string())) << run.output;
  EXPECT_TRUE(contains(run.output, "checksum")) << run.output;
  EXPECT_TRUE(contains(run.output, "\"problem\": ")) << run.output;
}

// Issue #12: 64 bytes flipped in index.h5 (its /catalog) and inspect said "verified yes",
// exit 0, while a resume refused it. Both now refuse it with the same message.
TEST_F(FaultsCheckpoint, InspectIndexDamaged) {
  const fs::path dir = copy_of_base("index_damaged");
  TrainSandbox::damage(dir / "index.h5");
  const HydraRun run = inspect(dir);
  EXPECT_EQ(run.exit_code, 3) << run.output;
  const std::string what = (dir / "index.h5").string() + ": /catalog: checksum mismatch";
  ASSERT_TRUE(contains(run.output, what)) << run.output;
  EXPECT_FALSE(contains(run.output, "verified    yes")) << run.output;
  const size_t from = run.output.find(what);
  const std::string message = run.output.substr(from, run.output.find('\n', from) - from);
  const HydraRun resumed = resume(dir, "index_damaged_resume");
  EXPECT_EQ(resumed.exit_code, 3) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, message)) << message << "\n" << resumed.output;
}

TEST_F(FaultsCheckpoint, InspectRankFileMissing) {
  const fs::path dir = copy_of_base("rank_missing");
  fs::remove(dir / "rank_00000.h5");
  const HydraRun run = inspect(dir);
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_TRUE(contains(run.output, (dir / "rank_00000.h5").string() + ": missing")) << run.output;
}

TEST_F(FaultsCheckpoint, InspectRankFileTruncated) {
  const fs::path dir = copy_of_base("rank_truncated");
  fs::resize_file(dir / "rank_00000.h5", fs::file_size(dir / "rank_00000.h5") / 2);
  const HydraRun run = inspect(dir);
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_TRUE(contains(run.output, (dir / "rank_00000.h5").string())) << run.output;
  EXPECT_TRUE(contains(run.output, "truncated")) << run.output;
}

TEST_F(FaultsCheckpoint, InspectNoCommitMarker) {
  const fs::path dir = copy_of_base("no_commit");
  fs::remove(dir / "COMMIT");
  const HydraRun run = inspect(dir);
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_TRUE(contains(run.output, dir.string() + ": an incomplete checkpoint (no COMMIT marker")) << run.output;
  EXPECT_TRUE(fs::exists(dir / "index.h5"));  // refused, not cleaned up: it is the user's
}

// Issue #12: both said "no COMMIT marker" for a path that does not exist.
TEST_F(FaultsCheckpoint, InspectOrResumeNonexistentDirectory) {
  const std::string missing = (root() / "no_such_checkpoint").string();
  const HydraRun run = inspect(missing);
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_TRUE(contains(run.output, missing + ": no such directory")) << run.output;
  EXPECT_FALSE(contains(run.output, "COMMIT")) << run.output;
  const HydraRun resumed = resume(missing, "nonexistent_resume");
  EXPECT_EQ(resumed.exit_code, 3) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, missing + ": no such directory")) << resumed.output;
  EXPECT_FALSE(contains(resumed.output, "COMMIT")) << resumed.output;
}

TEST_F(FaultsCheckpoint, InspectDirectoryThatIsNoCheckpoint) {
  const HydraRun text = inspect(root() / "text");
  EXPECT_EQ(text.exit_code, 3) << text.output;
  EXPECT_TRUE(contains(text.output, (root() / "text").string() + ": not a checkpoint (no COMMIT marker, no index.h5)"))
      << text.output;
  // checkpoint.dir itself instead of one of its step_N directories.
  const HydraRun parent = inspect(root() / "base" / "ckpt");
  EXPECT_EQ(parent.exit_code, 3) << parent.output;
  EXPECT_TRUE(contains(parent.output, "a checkpoint.dir, not a checkpoint")) << parent.output;
  EXPECT_TRUE(contains(parent.output, base_checkpoint().string())) << parent.output;
}

// Issue #12: a full disk during a save segfaulted at exit (139, HDF5's exit cleanup closing
// the file whose close had failed) and left the partial step_N.tmp, keeping the disk full.
TEST_F(FaultsCheckpoint, FullDiskDuringSave) { check_full_disk("full_disk_sync", false); }

TEST_F(FaultsCheckpoint, FullDiskDuringAsyncSave) { check_full_disk("full_disk_async", true); }

}  // namespace
