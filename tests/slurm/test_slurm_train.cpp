// slurm/train.sbatch on a real Slurm (scripts/slurm-local.sh: a controller and two slurmd
// nodes on this machine, label slurm): a 2-node job of 2 tasks per node trains the sandbox
// model at dp 4, and its losses and gradient norms equal the same layout under plain mpirun.
// The cluster is started for the suite and stopped after it, also when a test fails.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/train/train_sandbox.h"

namespace {

using hydra::test::TrainSandbox;

struct SlurmTrain : hydra::test::SandboxTest<SlurmTrain> {
  static constexpr const char* kTag = "hydra_slurm_train";
  static constexpr int kSteps = 5;

  static std::string cluster_dir() { return (root() / "slurm").string(); }
  // Ports of this suite's cluster: apart from another suite's on the same machine.
  static std::string port_env() { return "HYDRA_SLURM_PORT=" + std::to_string(20000 + (::getpid() % 2000) * 4) + " "; }
  static std::string slurm_env() { return "SLURM_CONF=" + cluster_dir() + "/slurm.conf "; }

  static void SetUpTestSuite() {
    hydra::test::SandboxTest<SlurmTrain>::SetUpTestSuite();
    const std::string start = port_env() + HYDRA_SOURCE_DIR "/scripts/slurm-local.sh start " + cluster_dir() + " > " +
                              (root() / "slurm-start.log").string() + " 2>&1";
    ASSERT_EQ(std::system(start.c_str()), 0) << read(root() / "slurm-start.log");
  }
  static void TearDownTestSuite() {
    const std::string stop = HYDRA_SOURCE_DIR "/scripts/slurm-local.sh stop " + cluster_dir() + " > /dev/null 2>&1";
    (void)std::system(stop.c_str());
    hydra::test::SandboxTest<SlurmTrain>::TearDownTestSuite();
  }

  static std::string read(const std::filesystem::path& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return path.string() + ":\n" + ss.str();
  }

  // sbatch --wait of slurm/train.sbatch from the repository's root, CPU resources instead of
  // GPUs (the only change a user makes here), with the sandbox run's settings.
  static int submit(const std::string& name, int nodes, int tasks_per_node, const std::string& sets) {
    const auto dir = root() / name;
    std::filesystem::create_directories(dir);
    const std::string cmd =
        "cd " HYDRA_SOURCE_DIR " && " + slurm_env() +
        // Both nodes are this host: Open MPI's shared-memory transport would give the ranks of
        // n1 and n2 the same segment names, so ranks talk over TCP (a real cluster needs nothing).
        "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,tcp "
        "HYDRA=" HYDRA_BIN " timeout 300 sbatch --wait --nodes=" + std::to_string(nodes) +
        " --ntasks-per-node=" + std::to_string(tasks_per_node) + " --cpus-per-task=1 --gpus-per-node=0 --time=10 " +
        "--output=" + (dir / "slurm.out").string() + " slurm/train.sbatch " + (root() / "run.yaml").string() +
        " --set checkpoint.dir=" + (dir / "ckpt").string() + " --set log.jsonl=" + (dir / "metrics.jsonl").string() +
        " " + sets + " > " + (dir / "sbatch.log").string() + " 2>&1";
    return std::system(cmd.c_str());
  }
};

TEST_F(SlurmTrain, TwoNodeJobEqualsMpirunWithTheSameLayout) {
  // The sandbox's global batch of 4 sequences: one per rank.
  const auto ref = sandbox()->train("mpirun_dp4", 4, {"parallel.dp=4", "train.micro_batch=1"});
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  ASSERT_EQ(submit("slurm_dp4", 2, 2, "--set parallel.dp=4 --set train.micro_batch=1"), 0)
      << read(root() / "slurm_dp4" / "sbatch.log") << read(root() / "slurm_dp4" / "slurm.out");
  const auto want = sandbox()->metrics_rows("mpirun_dp4"), got = sandbox()->metrics_rows("slurm_dp4");
  ASSERT_EQ(want.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [step, row] : want) {
    EXPECT_EQ(TrainSandbox::training_fields(got.at(step)), TrainSandbox::training_fields(row)) << "step " << step;
  }
}

}  // namespace
