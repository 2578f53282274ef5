// A GoogleTest main() for tests that run on every rank under mpirun: MPI starts and stops
// with the process, rank 0 prints as usual, the other ranks print only their failures
// (tagged with rank and test), the tests get a ParallelContext, and the process fails if any
// rank failed — so `mpirun -np N test` is one ctest test with one meaningful exit code.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "common/errors.h"
#include "common/heap_reuse.h"
#include "parallel/mpi_session.h"
#include "parallel/parallel_context.h"

namespace hydra::test {

// What the tests of one binary run on.
struct MpiTestSetup {
  parallel::GridShape shape;
  std::string backend = "mpi";
  double timeout_s = 60;
};

// Called after gtest removed its own flags, with the remaining arguments.
using MpiTestConfigure = std::function<MpiTestSetup(int argc, char** argv, const parallel::LaunchInfo& launch)>;

// Prints only failed assertions, tagged with the rank and the test.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  // The test name is kept here: UnitTest::current_test_info() takes the lock that gtest
  // already holds while it reports a part result (calling it there deadlocks).
  void OnTestStart(const ::testing::TestInfo& info) override {
    test_ = std::string(info.test_suite_name()) + "." + info.name();
  }
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] FAILED %s at %s:%d\n%s\n", rank_, test_.c_str(), r.file_name() ? r.file_name() : "?",
                 r.line_number(), r.summary());
  }

 private:
  int rank_;
  std::string test_;
};

// Runs every test on every rank with `current` pointing at the context while they run.
inline int mpi_test_main(int argc, char** argv, const char* name, const MpiTestConfigure& configure,
                         parallel::ParallelContext*& current) {
  common::keep_freed_heap_for_reuse();  // as the hydra executable runs (common/heap_reuse.h)
  try {
    parallel::MpiSession session(&argc, &argv);
    const parallel::LaunchInfo& launch = session.launch();
    try {
      ::testing::InitGoogleTest(&argc, argv);
      const MpiTestSetup setup = configure(argc, argv, launch);
      ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
      if (launch.rank != 0) {
        delete listeners.Release(listeners.default_result_printer());
        listeners.Append(new RankFailurePrinter(launch.rank));
      }
      std::unique_ptr<parallel::ParallelContext> ctx = parallel::make_parallel_context(
          parallel::make_process_grid(setup.shape, launch.rank), setup.backend, setup.timeout_s);
      current = ctx.get();
      const int local = RUN_ALL_TESTS();
      current = nullptr;
      ctx.reset();  // communicators go before MPI does
      int any = 0;
      HYDRA_MPI_CHECK(MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
      if (launch.rank == 0 && any != local) std::printf("%s: FAILED on another rank (see its output)\n", name);
      return any == 0 ? 0 : 1;
    } catch (const common::HydraError& e) {
      std::fprintf(stderr, "%s: rank %d: %s\n", name, launch.rank, e.what());
      std::fflush(stderr);
      session.abort(static_cast<int>(e.code()));  // the other ranks may be waiting on this one
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
  }
  return 1;
}

}  // namespace hydra::test
