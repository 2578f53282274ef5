#include "parallel/mpi_session.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <sstream>

#include "common/errors.h"

namespace hydra::parallel {

namespace {

bool mpi_is_live() {
  int initialized = 0;
  int finalized = 0;
  // Both may be called at any time, before MPI_Init and after MPI_Finalize.
  if (MPI_Initialized(&initialized) != MPI_SUCCESS || MPI_Finalized(&finalized) != MPI_SUCCESS) {
    return false;
  }
  return initialized && !finalized;
}

}  // namespace

int world_rank_or_unknown() {
  if (!mpi_is_live()) return -1;
  int rank = -1;
  if (MPI_Comm_rank(MPI_COMM_WORLD, &rank) != MPI_SUCCESS) return -1;
  return rank;
}

void throw_mpi_error(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  // MPI_Error_string is callable before MPI_Init and after MPI_Finalize.
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) {
    std::snprintf(text, sizeof(text), "MPI error code %d", code);
  }
  HYDRA_FAIL(common::RuntimeFailure, file << ":" << line << ": " << call << " failed on rank "
                                          << world_rank_or_unknown() << ": " << text);
}

LaunchInfo query_launch_info(MPI_Comm world) {
  LaunchInfo info;
  HYDRA_MPI_CHECK(MPI_Comm_rank(world, &info.rank));
  HYDRA_MPI_CHECK(MPI_Comm_size(world, &info.world));
  // The shared-memory split groups the processes of one node; key = world rank keeps the
  // local order equal to the launch order, so local rank k drives GPU k.
  MPI_Comm node = MPI_COMM_NULL;
  HYDRA_MPI_CHECK(
      MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, info.rank, MPI_INFO_NULL, &node));
  const int rank_rc = MPI_Comm_rank(node, &info.local_rank);
  const int size_rc = MPI_Comm_size(node, &info.local_world);
  HYDRA_MPI_CHECK(MPI_Comm_free(&node));
  HYDRA_MPI_CHECK(rank_rc);
  HYDRA_MPI_CHECK(size_rc);
  return info;
}

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  HYDRA_MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = MPI_THREAD_SINGLE;
    HYDRA_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    owns_mpi_ = true;
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      HYDRA_FAIL(common::RuntimeFailure, "MPI provides thread level "
                                             << provided << " but HYDRA needs MPI_THREAD_FUNNELED");
    }
    // Return codes instead of MPI's default abort-on-error, so HYDRA_MPI_CHECK can report
    // the failing call with file, line and rank. Sub-communicators inherit the handler.
    HYDRA_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  }
  launch_ = query_launch_info(MPI_COMM_WORLD);
}

MpiSession::~MpiSession() {
  if (!owns_mpi_ || !mpi_is_live()) return;
  // Unwinding from an exception in a run of several ranks: the others may be waiting for this
  // one inside a collective, and Open MPI's MPI_Finalize waits for every process (a fence),
  // so finalizing would turn the error into a hang until their timeout. Leaving without it,
  // mpirun ends the job and returns this process's exit code (checked with Open MPI 4.1).
  if (std::uncaught_exceptions() > 0 && launch_.world > 1) return;
  // A destructor must not throw; a failing MPI_Finalize at exit has nobody left to tell.
  MPI_Finalize();
}

void MpiSession::abort(int exit_code) const {
  spdlog::default_logger()->flush();
  std::fflush(stdout);
  std::fflush(stderr);
  if (mpi_is_live()) MPI_Abort(MPI_COMM_WORLD, exit_code);
  _exit(exit_code);  // MPI_Abort does not return; this covers MPI being gone already
}

}  // namespace hydra::parallel
