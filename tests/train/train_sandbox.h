// A scratch directory for end-to-end `hydra train` tests: a small real-text corpus prepared
// with the bytes tokenizer, a small run config (all three attention types, MoD and MoR on),
// and helpers that run the real binary — alone or under mpirun — and read its metrics file.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <memory>

#include "tests/launcher/run_hydra.h"

namespace hydra::test {

// A step takes milliseconds on one core. TrainSandbox appends train.steps and the data section.
inline const char* kSmallRunConfig = R"(model:
  dim: 32
  heads: 2
  kv_heads: 1
  mlp_ratio: 2.0
  macro_blocks: 1
  pattern: [mqa, ccqa, mla, ccqa]
  vocab_size: 256
  tie_embeddings: false
  ccqa: {compress: head_dim}  # heads needs C (4) to divide the 2 heads
  mod: {enabled: true, capacity: 0.5, layers: [1, 3]}
  mor: {recursions: 2}
log:
  every: 1
train:
  global_batch: 4
  micro_batch: 2
  seq_len: 32
  lr: 0.01
  min_lr: 0.001
  warmup_steps: 2
  eval_batches: 2
)";

class TrainSandbox {
 public:
  // Prepares <tmp>/<tag>_<pid>/tokens from a GPL text every Debian system has, and run.yaml
  // (kSmallRunConfig with train.steps = steps and data.path set).
  TrainSandbox(const std::string& tag, int steps) {
    namespace fs = std::filesystem;
    root_ = fs::temp_directory_path() / (tag + "_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "text");
    fs::copy_file("/usr/share/common-licenses/GPL-3", root_ / "text" / "gpl3.txt");
    prepare_ = run_hydra({"data", "prepare", "--input", (root_ / "text").string(), "--output",
                          (root_ / "tokens").string(), "--tokenizer", "bytes", "--val-fraction", "0.1"},
                         (root_ / "prepare.log").string());
    std::ofstream(root_ / "run.yaml") << kSmallRunConfig << "  steps: " << steps << "\n"
                                      << "data:\n  tokenizer: bytes\n  path: " << (root_ / "tokens").string() << "\n";
  }
  ~TrainSandbox() { std::filesystem::remove_all(root_); }
  TrainSandbox(const TrainSandbox&) = delete;
  TrainSandbox& operator=(const TrainSandbox&) = delete;

  const std::filesystem::path& root() const { return root_; }
  const HydraRun& prepare_run() const { return prepare_; }

  // `hydra train` on `np` ranks (0: no mpirun) with checkpoint dir and metrics file under
  // root/name, then each `--set` of `sets`, then `extra` arguments.
  HydraRun train(const std::string& name, int np, const std::vector<std::string>& sets = {},
                 const std::vector<std::string>& extra = {}) const {
    namespace fs = std::filesystem;
    std::vector<std::string> args = {"train", "--config", (root_ / "run.yaml").string(),
                                     "--set", "checkpoint.dir=" + (root_ / name / "ckpt").string(),
                                     "--set", "log.jsonl=" + (root_ / name / "metrics.jsonl").string()};
    for (const auto& s : sets) args.insert(args.end(), {"--set", s});
    args.insert(args.end(), extra.begin(), extra.end());
    fs::create_directories(root_ / name);
    return run_hydra(args, (root_ / name / "out.log").string(), np == 0 ? "" : mpirun_prefix(np));
  }

  // `train(name, np, sets)` the first time `name` is asked for; its result again after. A
  // reference run that several tests of one binary compare against is trained once (the
  // binary's tests run in one process under ONE_PROCESS), and a second `train` into the same
  // directory would resume or refuse instead of training afresh. Asking again with other `np`
  // or settings is a test bug: it fails the test (and returns the first run).
  const HydraRun& train_once(const std::string& name, int np, const std::vector<std::string>& sets = {}) {
    auto found = once_.find(name);
    if (found == once_.end()) {
      found = once_.emplace(name, OnceRun{np, sets, train(name, np, sets)}).first;
    }
    const OnceRun& run = found->second;
    EXPECT_TRUE(run.np == np && run.sets == sets) << "run " << name << " was first trained with other ranks or settings";
    return run.result;
  }

  // The command that starts `np` ranks on this machine (root, 2 cores, inside a container).
  static std::string mpirun_prefix(int np) {
    return "OMPI_MCA_btl_vader_single_copy_mechanism=none " HYDRA_MPIEXEC " --allow-run-as-root --oversubscribe -np " +
           std::to_string(np);
  }

  // Starts `command` (output to root/name/out.log) in the background, waits until the run's
  // metrics file under root/name has `rows` rows, runs `signal_command` ($pid is the started
  // process), and returns {wait status, the output}. A run that ignores the signal is killed
  // by `kill_command` after 120 s, so a broken signal path never hangs the suite. The command
  // runs under job control, as from a terminal: in a process group of its own ($pid's, so
  // `kill -INT -$pid` is a Ctrl-C) and with SIGINT not ignored (a script without job control
  // starts background commands with SIGINT ignored, and a shell cannot trap it then).
  std::pair<int, std::string> run_and_signal(const std::string& name, const std::string& command, int rows,
                                             const std::string& signal_command, const std::string& kill_command) const {
    const std::filesystem::path dir = root_ / name;
    std::filesystem::create_directories(dir);
    const std::string metrics = (dir / "metrics.jsonl").string();
    std::ofstream(dir / "run.sh") << "set -m\n"
                                  << command << " > " << (dir / "out.log").string() << " 2>&1 &\n"
                                  << "pid=$!\n"
                                  << "set +m\n"
                                  << "for i in $(seq 1200); do\n"
                                  << "  if [ -f " << metrics << " ] && [ $(wc -l < " << metrics << ") -ge " << rows
                                  << " ]; then break; fi\n"
                                  << "  sleep 0.05\n"
                                  << "done\n"
                                  << signal_command << "\n"
                                  << "( sleep 120; " << kill_command << " ) >/dev/null 2>&1 & guard=$!\n"
                                  << "wait $pid; rc=$?\n"
                                  << "kill $guard 2>/dev/null\n"
                                  << "exit $rc\n";
    const int status = std::system(("bash " + (dir / "run.sh").string()).c_str());
    std::ifstream in(dir / "out.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return {status, ss.str()};
  }

  // step -> the metrics row of the run `name`, as written.
  std::map<int, std::string> metrics_rows(const std::string& name) const {
    std::map<int, std::string> rows;
    std::ifstream in(root_ / name / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) rows[std::stoi(line.substr(line.find("\"step\": ") + 8))] = line;
    return rows;
  }

  // The training fields of a row (loss, aux_loss, lr, grad_norm) as written, bit for bit.
  static std::string training_fields(const std::string& row) {
    const size_t from = row.find("\"loss\"");
    return row.substr(from, row.find(", \"tokens\"") - from);
  }

  static double loss_of(const std::string& row) { return std::stod(row.substr(row.find("\"loss\": ") + 8)); }

  // step -> {loss, grad_norm} of the run `name`.
  std::map<int, std::pair<double, double>> loss_and_grad_norm(const std::string& name) const {
    std::map<int, std::pair<double, double>> out;
    for (const auto& [step, row] : metrics_rows(name)) {
      out[step] = {loss_of(row), std::stod(row.substr(row.find("\"grad_norm\": ") + 13))};
    }
    return out;
  }

  // Starts `launch` (a `hydra train` under mpirun whose checkpoint.dir is root/name/ckpt),
  // waits for `rows` metrics rows, then sends SIGUSR1 to one rank of this run only: the
  // oldest process whose command line starts with hydra (not mpirun) and names this run's
  // checkpoint directory (other tests may be training too). Returns {wait status, output}.
  std::pair<int, std::string> run_and_preempt_one_rank(const std::string& name, const std::string& launch,
                                                       int rows) const {
    const std::string ckpt = (root_ / name / "ckpt").string();
    return run_and_signal(name, launch, rows, "pkill -USR1 -o -f '^" HYDRA_BIN " train .*" + ckpt + "'",
                          "pkill -9 -f '" + ckpt + "'");
  }

  // Overwrites 64 bytes in the middle of a file: data or metadata, either must be detected.
  static void damage(const std::filesystem::path& file) {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(file) / 2));
    f.write(std::string(64, '\x5a').data(), 64);
  }

 private:
  struct OnceRun {
    int np;
    std::vector<std::string> sets;
    HydraRun result;
  };
  std::filesystem::path root_;
  HydraRun prepare_;
  std::map<std::string, OnceRun> once_;  // train_once's runs by name
};

// A GoogleTest fixture whose test suite shares one sandbox: `Suite` names it with
// `static constexpr const char* kTag` and `static constexpr int kSteps`.
template <typename Suite>
struct SandboxTest : ::testing::Test {
  static void SetUpTestSuite() {
    sandbox() = std::make_unique<TrainSandbox>(Suite::kTag, Suite::kSteps);
    ASSERT_EQ(sandbox()->prepare_run().exit_code, 0) << sandbox()->prepare_run().output;
  }
  static void TearDownTestSuite() { sandbox().reset(); }
  static std::unique_ptr<TrainSandbox>& sandbox() {
    static std::unique_ptr<TrainSandbox> box;
    return box;
  }
  static std::filesystem::path root() { return sandbox()->root(); }
};

}  // namespace hydra::test
