// The fault matrix of `hydra data prepare` (docs/FAULTS.md): what a careless or hostile user
// does to it — a directory of their own files as --output, the output equal to the input or
// under a file, bad or missing input, no tokenizer, Ctrl-C — each run through the real
// binary, asserting the exit code, the message (naming the directory, file or value) and
// what is left on disk: the user's files untouched, no half-written output, no staging
// directory beside it.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/data/data_test_util.h"
#include "tests/launcher/run_hydra.h"

namespace hydra::test {
namespace {

namespace fs = std::filesystem;
using data::testing::read_file;
using data::testing::write_file;

#define EXPECT_MENTIONS(text, part) \
  EXPECT_NE((text).find(part), std::string::npos) << "output:\n" << (text) << "\nexpected to mention: " << (part)

// Every file under dir (relative name -> content): "untouched" means equal before and after.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) files[fs::relative(e.path(), dir).string()] = read_file(e.path());
  }
  return files;
}

// A scratch directory per test with a small text corpus in text/.
class FaultsData : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("faults_data_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    std::string text;
    for (int i = 0; i < 200; ++i) text += "Line " + std::to_string(i) + " of a small corpus.\n";
    write_file(root_ / "text" / "a.txt", text);
  }
  void TearDown() override {
    fs::permissions(root_, fs::perms::owner_all, fs::perm_options::add);
    fs::remove_all(root_);
  }

  // `hydra data prepare --input input --output output --tokenizer bytes --val-fraction 0.1`.
  HydraRun prepare(const std::string& input, const std::string& output, const std::string& env = "") {
    return run_hydra({"data", "prepare", "--input", input, "--output", output, "--tokenizer", "bytes",
                      "--val-fraction", "0.1"},
                     (root_ / "prepare.log").string(), env);
  }

  // Entries of dir that a prepare left behind: its staging directories (.NAME.prepare-PID.tmp).
  static std::vector<std::string> staging_left_in(const fs::path& dir) {
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().filename().string().find(".prepare-") != std::string::npos) left.push_back(e.path().string());
    }
    return left;
  }

  fs::path root_;
};

// Issue #12: prepare deleted the user's train_000007.bin from a directory without a manifest.
TEST_F(FaultsData, NonEmptyOutputItDidNotWriteIsRefused) {
  const fs::path out = root_ / "mine";
  write_file(out / "train_000007.bin", "the user's own bytes");
  write_file(out / "notes.txt", "keep me");
  const auto before = snapshot(out);
  const HydraRun run = prepare((root_ / "text").string(), out.string());
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_MENTIONS(run.output, "--output " + out.string() + ": not empty and not written by `hydra data prepare`");
  EXPECT_MENTIONS(run.output, "notes.txt, train_000007.bin");
  EXPECT_EQ(snapshot(out), before);
  EXPECT_EQ(staging_left_in(root_), std::vector<std::string>());
}

TEST_F(FaultsData, EarlierOutputWithFilesItsManifestDoesNotListIsRefused) {
  const fs::path out = root_ / "tokens";
  ASSERT_EQ(prepare((root_ / "text").string(), out.string()).exit_code, 0);
  write_file(out / "train_000007.bin", "the user's own bytes");
  const auto before = snapshot(out);
  const HydraRun run = prepare((root_ / "text").string(), out.string());
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_MENTIONS(run.output, "--output " + out.string() + ": holds files its manifest.json does not list");
  EXPECT_MENTIONS(run.output, "(train_000007.bin)");
  EXPECT_EQ(snapshot(out), before);
  EXPECT_EQ(staging_left_in(root_), std::vector<std::string>());
}

TEST_F(FaultsData, OutputWithAForeignManifestIsRefused) {
  const fs::path out = root_ / "other";
  write_file(out / "manifest.json", "{\"name\": \"someone else's\"}\n");
  const auto before = snapshot(out);
  const HydraRun run = prepare((root_ / "text").string(), out.string());
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_MENTIONS(run.output, "--output " + out.string() + ": not empty, and its manifest.json is not one");
  EXPECT_EQ(snapshot(out), before);
}

// Re-tokenizing into the same directory: the earlier output is replaced as a whole.
TEST_F(FaultsData, RerunIntoItsOwnOutputReplacesIt) {
  const fs::path out = root_ / "tokens";
  ASSERT_EQ(prepare((root_ / "text").string(), out.string()).exit_code, 0);
  write_file(root_ / "text" / "b.txt", std::string(70000, 'b'));
  const HydraRun run = prepare((root_ / "text").string(), out.string());
  EXPECT_EQ(run.exit_code, 0) << run.output;
  const std::string manifest = read_file(out / "manifest.json");
  EXPECT_MENTIONS(manifest, "\"documents\": 2");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(out)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"manifest.json", "train_000000.bin", "val_000000.bin"}));
  EXPECT_EQ(staging_left_in(root_), std::vector<std::string>());
}

TEST_F(FaultsData, EmptyOutputDirectoryIsUsed) {
  const fs::path out = root_ / "empty";
  fs::create_directories(out);
  const HydraRun run = prepare((root_ / "text").string(), out.string());
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(fs::exists(out / "manifest.json"));
  EXPECT_EQ(staging_left_in(root_), std::vector<std::string>());
}

// A link to an earlier output: the directory it points to is replaced, the link stays.
TEST_F(FaultsData, OutputThroughASymbolicLink) {
  const fs::path real = root_ / "disk" / "tokens";
  ASSERT_EQ(prepare((root_ / "text").string(), real.string()).exit_code, 0);
  fs::create_directory_symlink(real, root_ / "tokens");
  write_file(root_ / "text" / "b.txt", "a second document");
  const HydraRun run = prepare((root_ / "text").string(), (root_ / "tokens").string());
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(fs::is_symlink(root_ / "tokens"));
  EXPECT_MENTIONS(read_file(real / "manifest.json"), "\"documents\": 2");
  EXPECT_EQ(staging_left_in(root_ / "disk"), std::vector<std::string>());

  fs::create_directory_symlink(root_ / "nowhere", root_ / "dangling");
  const HydraRun dangling = prepare((root_ / "text").string(), (root_ / "dangling").string());
  EXPECT_EQ(dangling.exit_code, 2) << dangling.output;
  EXPECT_MENTIONS(dangling.output, "--output " + (root_ / "dangling").string() + ": a symbolic link to nothing");
  EXPECT_FALSE(fs::exists(root_ / "nowhere"));
}

TEST_F(FaultsData, MissingInput) {
  const HydraRun run = prepare((root_ / "nope.txt").string(), (root_ / "tokens").string());
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_MENTIONS(run.output, "input " + (root_ / "nope.txt").string() + ": no such file or directory");
  EXPECT_FALSE(fs::exists(root_ / "tokens"));
}

TEST_F(FaultsData, EmptyInput) {
  write_file(root_ / "empty.txt", "");
  const HydraRun run = prepare((root_ / "empty.txt").string(), (root_ / "tokens").string());
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_MENTIONS(run.output, "input " + (root_ / "empty.txt").string() + ": empty file");
  EXPECT_FALSE(fs::exists(root_ / "tokens"));
  EXPECT_EQ(staging_left_in(root_), std::vector<std::string>());
}

TEST_F(FaultsData, BinaryInput) {
  write_file(root_ / "image.txt", std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16));
  const HydraRun run = prepare((root_ / "image.txt").string(), (root_ / "tokens").string());
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_MENTIONS(run.output, "input " + (root_ / "image.txt").string() + ":1: not valid UTF-8 (byte 0 is 0x89)");
  EXPECT_FALSE(fs::exists(root_ / "tokens"));
  EXPECT_EQ(staging_left_in(root_), std::vector<std::string>());
}

TEST_F(FaultsData, NulBytesInInput) {
  write_file(root_ / "text" / "dump.txt", std::string("ok\nab\0cd", 8));
  const HydraRun run = prepare((root_ / "text").string(), (root_ / "tokens").string());
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_MENTIONS(run.output, "input " + (root_ / "text" / "dump.txt").string() + ":2: NUL byte at byte 5");
  EXPECT_FALSE(fs::exists(root_ / "tokens"));
}

TEST_F(FaultsData, InvalidUtf8Input) {
  write_file(root_ / "latin1.txt", "line one\ncaf\xE9\n");
  const HydraRun run = prepare((root_ / "latin1.txt").string(), (root_ / "tokens").string());
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_MENTIONS(run.output, "input " + (root_ / "latin1.txt").string() + ":2: not valid UTF-8 (byte 12 is 0xe9)");
  EXPECT_FALSE(fs::exists(root_ / "tokens"));
}

// A failed run into a path several levels deep leaves none of the levels it created.
TEST_F(FaultsData, FailedRunLeavesNoDirectories) {
  write_file(root_ / "latin1.txt", "caf\xE9\n");
  const HydraRun run = prepare((root_ / "latin1.txt").string(), (root_ / "new" / "deep" / "tokens").string());
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_FALSE(fs::exists(root_ / "new"));
}

TEST_F(FaultsData, OutputUnderAFile) {
  const HydraRun run = prepare((root_ / "text").string(), (root_ / "text" / "a.txt" / "tokens").string());
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_MENTIONS(run.output, ": " + (root_ / "text" / "a.txt").string() + " is a file, not a directory");
}

TEST_F(FaultsData, OutputIsAFile) {
  write_file(root_ / "tokens", "a file");
  const HydraRun run = prepare((root_ / "text").string(), (root_ / "tokens").string());
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_MENTIONS(run.output, "--output " + (root_ / "tokens").string() + ": is a file, not a directory");
  EXPECT_EQ(read_file(root_ / "tokens"), "a file");
}

TEST_F(FaultsData, OutputEqualToInput) {
  const auto before = snapshot(root_ / "text");
  const HydraRun run = prepare((root_ / "text").string(), (root_ / "text").string());
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_MENTIONS(run.output, "--output " + (root_ / "text").string() + ": is the input");
  EXPECT_EQ(snapshot(root_ / "text"), before);
  const HydraRun file = prepare((root_ / "text" / "a.txt").string(), (root_ / "text" / "a.txt").string());
  EXPECT_EQ(file.exit_code, 2) << file.output;
  EXPECT_MENTIONS(file.output, "--output " + (root_ / "text" / "a.txt").string() + ": is the input");
  EXPECT_EQ(snapshot(root_ / "text"), before);
}

// sysfs refuses new directories even to root (which ignores permission bits).
TEST_F(FaultsData, UnwritableOutput) {
  fs::path out = "/sys/hydra-faults-tokens";
  if (::geteuid() != 0) {
    fs::create_directories(root_ / "locked");
    fs::permissions(root_ / "locked", fs::perms::owner_read | fs::perms::owner_exec);
    out = root_ / "locked" / "tokens";
  }
  const HydraRun run = prepare((root_ / "text").string(), out.string());
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_MENTIONS(run.output, "--output " + out.string() + ": cannot create a directory beside it");
  EXPECT_FALSE(fs::exists(out));
}

// /dev/shm is a tmpfs mount on Linux: a rename cannot replace it, so it is refused at start.
TEST_F(FaultsData, OutputIsAMountPoint) {
  struct stat shm {}, dev {};
  if (::stat("/dev/shm", &shm) != 0 || ::stat("/dev", &dev) != 0 || shm.st_dev == dev.st_dev) {
    GTEST_SKIP() << "/dev/shm is not a mount point here";
  }
  const HydraRun run = prepare((root_ / "text").string(), "/dev/shm");
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_MENTIONS(run.output, "--output /dev/shm: a mount point, which the finished output cannot replace");
  EXPECT_EQ(staging_left_in("/dev"), std::vector<std::string>());
}

TEST_F(FaultsData, TokenizerFilesMissing) {
  fs::create_directories(root_ / "no-tokenizer");
  const HydraRun run = run_hydra({"data", "prepare", "--input", (root_ / "text").string(), "--output",
                                  (root_ / "tokens").string(), "--tokenizer", "gpt2"},
                                 (root_ / "prepare.log").string(),
                                 "HYDRA_TOKENIZER_DIR=" + shell_quote((root_ / "no-tokenizer").string()));
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_MENTIONS(run.output, (root_ / "no-tokenizer").string());
  EXPECT_MENTIONS(run.output, "fetch-tokenizer.sh");
  EXPECT_FALSE(fs::exists(root_ / "tokens"));
}

TEST_F(FaultsData, UnknownTokenizer) {
  const HydraRun run = run_hydra({"data", "prepare", "--input", (root_ / "text").string(), "--output",
                                  (root_ / "tokens").string(), "--tokenizer", "gpt4"},
                                 (root_ / "prepare.log").string());
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_MENTIONS(run.output, "unknown tokenizer 'gpt4'");
  EXPECT_FALSE(fs::exists(root_ / "tokens"));
}

TEST_F(FaultsData, ValFractionOutOfRange) {
  const HydraRun run = run_hydra({"data", "prepare", "--input", (root_ / "text").string(), "--output",
                                  (root_ / "tokens").string(), "--val-fraction", "1.5"},
                                 (root_ / "prepare.log").string());
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_MENTIONS(run.output, "--val-fraction: expected a number in [0, 1), got '1.5'");
  EXPECT_FALSE(fs::exists(root_ / "tokens"));
}

// Name -> size of the files in dir: a cheap "unchanged" for outputs of many megabytes.
std::map<std::string, uintmax_t> sizes(const fs::path& dir) {
  std::map<std::string, uintmax_t> out;
  for (const auto& e : fs::directory_iterator(dir)) out[e.path().filename().string()] = fs::file_size(e.path());
  return out;
}

// SIGTERM (Slurm's, or kill) in the middle of tokenizing: exit 4, the earlier output whole.
// (A background job of a script ignores SIGINT, and so does prepare then, as it should.)
TEST_F(FaultsData, InterruptedRunLeavesTheEarlierOutput) {
  const fs::path out = root_ / "tokens";
  ASSERT_EQ(prepare((root_ / "text").string(), out.string()).exit_code, 0);
  const std::string manifest = read_file(out / "manifest.json");
  const auto before = sizes(out);
  std::string big;
  for (int i = 0; big.size() < (50u << 20); ++i) big += "Line " + std::to_string(i) + " of a large corpus.\n";
  write_file(root_ / "big" / "big.txt", big);
  std::ofstream(root_ / "run.sh") << "'" << HYDRA_BIN << "' data prepare --input " << (root_ / "big").string()
                                  << " --output " << out.string() << " --tokenizer bytes > "
                                  << (root_ / "prepare.log").string() << " 2>&1 &\n"
                                  << "pid=$!\n"
                                  << "for i in $(seq 400); do\n"
                                  << "  ls -a " << root_.string() << " | grep -q prepare- && break\n"
                                  << "  sleep 0.01\n"
                                  << "done\n"
                                  << "sleep 0.2; kill -TERM $pid; wait $pid\n";
  const int status = std::system(("bash " + (root_ / "run.sh").string()).c_str());
  const std::string output = read_file(root_ / "prepare.log");
  EXPECT_EQ(WEXITSTATUS(status), 4) << output;
  EXPECT_MENTIONS(output, "interrupted by signal 15 (Terminated); --output " + out.string() + " is as it was");
  EXPECT_EQ(read_file(out / "manifest.json"), manifest);
  EXPECT_EQ(sizes(out), before);
  EXPECT_EQ(staging_left_in(root_), std::vector<std::string>());
}

}  // namespace
}  // namespace hydra::test
