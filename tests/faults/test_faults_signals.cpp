// The fault matrix, signals (docs/FAULTS.md): a user's Ctrl-C or a scheduler's SIGTERM in the
// middle of `hydra train`, one process and under mpirun (through scripts/hydra-mpirun, because
// Open MPI's mpirun kills the ranks on either; docs/INTERFACE.md). The first one saves a
// committed checkpoint and exits 75 with a message saying how to continue, and the resumed
// run continues exactly; a second Ctrl-C stops at once, leaving no half-written checkpoint.
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <gtest/gtest.h>

#include "tests/train/preemption_check.h"
#include "tests/train/train_sandbox.h"

namespace {

namespace fs = std::filesystem;
using hydra::test::TrainSandbox;

struct FaultsSignals : hydra::test::SandboxTest<FaultsSignals> {
  static constexpr const char* kTag = "hydra_faults_signals";
  static constexpr int kSteps = 6;

  // scripts/hydra-mpirun on `np` ranks with this machine's mpirun and its options.
  static std::string hydra_mpirun(int np) {
    return "HYDRA_MPIRUN=" HYDRA_MPIEXEC " OMPI_MCA_btl_vader_single_copy_mechanism=none " HYDRA_SOURCE_DIR
           "/scripts/hydra-mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(np);
  }

  // Starts `launcher` + `hydra train` as run `name` with every save written 5 s late in the
  // background, sends Ctrl-C twice, 1 s apart, after three metrics rows, and returns
  // {wait status, output, seconds from the start to the end}.
  static std::tuple<int, std::string, double> interrupt_twice(const std::string& name, const std::string& launcher) {
    const fs::path dir = root() / name;
    const std::string launch = "HYDRA_CKPT_WRITE_DELAY_MS=5000 " + launcher + " '" HYDRA_BIN "' train --config " +
                               (root() / "run.yaml").string() + " --set train.steps=100000" +
                               " --set checkpoint.async=true --set checkpoint.dir=" + (dir / "ckpt").string() +
                               " --set log.jsonl=" + (dir / "metrics.jsonl").string();
    const auto start = std::chrono::steady_clock::now();
    const auto [status, log] = sandbox()->run_and_signal(name, launch, 3, "kill -INT -- -$pid; sleep 1; kill -INT -- -$pid",
                                                         "pkill -9 -f '" + (dir / "ckpt").string() + "'");
    return {status, log, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()};
  }

  // No committed checkpoint under root/name/ckpt: the save the second Ctrl-C cut short is not one.
  static bool no_committed_checkpoint(const std::string& name) {
    const fs::path ckpt = root() / name / "ckpt";
    if (!fs::exists(ckpt)) return true;
    for (const auto& entry : fs::directory_iterator(ckpt)) {
      if (fs::exists(entry.path() / "COMMIT")) return false;
    }
    return true;
  }
};

// `hydra train` in a terminal, Ctrl-C: SIGINT to its process group.
TEST_F(FaultsSignals, CtrlCSavesAndExits75) {
  hydra::test::expect_signal_saves_and_resumes(*sandbox(), "ctrl_c", "", 0, {}, "kill -INT -- -$pid");
}

// `scripts/hydra-mpirun -np 2 hydra train` in a terminal, Ctrl-C: SIGINT to the script's
// process group (mpirun and the ranks have their own).
TEST_F(FaultsSignals, CtrlCUnderMpirunSavesAndExits75) {
  hydra::test::expect_signal_saves_and_resumes(*sandbox(), "ctrl_c_np2", hydra_mpirun(2), 2, {}, "kill -INT -- -$pid");
}

// `kill PID` (SIGTERM) of scripts/hydra-mpirun -np 2.
TEST_F(FaultsSignals, SigtermUnderMpirunSavesAndExits75) {
  hydra::test::expect_signal_saves_and_resumes(*sandbox(), "sigterm_np2", hydra_mpirun(2), 2, {}, "kill -TERM $pid");
}

// The same SIGTERM delivered twice, 0.1 s apart, as Slurm does on a requeue or preemption: it
// signals the batch script's process group, which holds scripts/hydra-mpirun, while the batch
// script forwards the signal to it as well (slurm/train.sbatch). One request: the run saves
// and exits 75 and resumes exactly (it used to take the second as "stop at once": the Slurm
// test of an administrator's requeue then restarted from scratch).
TEST_F(FaultsSignals, SigtermTwiceAtOnceUnderMpirunIsOneRequest) {
  hydra::test::expect_signal_saves_and_resumes(*sandbox(), "sigterm_twice_np2", hydra_mpirun(2), 2, {},
                                               "kill -TERM $pid; sleep 0.1; kill -TERM $pid");
}

// SIGTERM to scripts/hydra-mpirun -np 2 a moment after it starts, before its ranks run or
// while they load (a Slurm job signalled in its first seconds), at three moments: mpirun
// forwards signals only to running ranks, so the request travels in the script's stop file
// (HYDRA_STOP_FILE) too; and SIGUSR1's default action kills a rank that has no handler yet, so
// the script forwards it only once the ranks say they are armed. The ranks find the file at
// their first step boundary, save and exit 75. Without the file the signal was lost and the run
// went on; without the arming a rank still loading died of SIGUSR1 (exit 138, seen once in
// three suites). A run that ignores the signal is killed after 120 s, mpirun and ranks included.
TEST_F(FaultsSignals, SigtermBeforeTheRanksRunStillSaves) {
  for (const std::string delay : {"0.05", "0.4", "0.8"}) {
    const std::string name = "sigterm_at_start_" + delay;
    const fs::path dir = root() / name;
    fs::create_directories(dir);
    std::ofstream(dir / "run.sh") << hydra_mpirun(2) << " '" HYDRA_BIN "' train --config " << (root() / "run.yaml").string()
                                  << " --set train.steps=100000 --set checkpoint.dir=" << (dir / "ckpt").string()
                                  << " --set log.jsonl=" << (dir / "metrics.jsonl").string() << " > "
                                  << (dir / "out.log").string() << " 2>&1 &\n"
                                  << "pid=$!\nsleep " << delay << "\nkill -TERM $pid\n"
                                  << "( sleep 120; pkill -9 -f '" << (dir / "ckpt").string()
                                  << "'; kill -9 $pid ) >/dev/null 2>&1 & guard=$!\n"
                                  << "wait $pid; rc=$?\nkill $guard 2>/dev/null\nexit $rc\n";
    const int status = std::system(("bash " + (dir / "run.sh").string()).c_str());
    std::ifstream in(dir / "out.log");
    const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_TRUE(WIFEXITED(status)) << "signal after " << delay << " s\n" << log;
    EXPECT_EQ(WEXITSTATUS(status), 75) << "signal after " << delay << " s\n" << log;
    // (At 0.8 s the ranks may have passed their first steps: the save comes at the next one.)
    EXPECT_NE(log.find("preempted by a signal at step "), std::string::npos) << "signal after " << delay << " s\n" << log;
    EXPECT_FALSE(no_committed_checkpoint(name)) << "signal after " << delay << " s\n" << log;
  }
}

// A second Ctrl-C while the checkpoint is being written: the process dies by SIGINT at once
// (exit status 130 through the shell), without the 5 s save, and leaves no committed checkpoint.
TEST_F(FaultsSignals, SecondCtrlCStopsAtOnce) {
  const auto [status, log, seconds] = interrupt_twice("ctrl_c_twice", "");
  ASSERT_TRUE(WIFEXITED(status)) << log;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGINT) << log;
  EXPECT_EQ(log.find("preempted by a signal"), std::string::npos) << log;
  EXPECT_LT(seconds, 30.0) << log;
  EXPECT_TRUE(no_committed_checkpoint("ctrl_c_twice")) << log;
}

// The same under scripts/hydra-mpirun -np 2: the second Ctrl-C aborts mpirun, which kills the
// ranks (SIGKILL about 2 s later): exit 1, no committed checkpoint.
TEST_F(FaultsSignals, SecondCtrlCUnderMpirunStopsAtOnce) {
  const auto [status, log, seconds] = interrupt_twice("ctrl_c_twice_np2", hydra_mpirun(2));
  ASSERT_TRUE(WIFEXITED(status)) << log;
  EXPECT_NE(WEXITSTATUS(status), 75) << log;
  EXPECT_NE(WEXITSTATUS(status), 0) << log;
  EXPECT_NE(log.find("hydra-mpirun: SIGINT again: stopping at once"), std::string::npos) << log;
  EXPECT_EQ(log.find("preempted by a signal"), std::string::npos) << log;
  EXPECT_LT(seconds, 30.0) << log;
  EXPECT_TRUE(no_committed_checkpoint("ctrl_c_twice_np2")) << log;
}

}  // namespace
