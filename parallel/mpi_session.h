// MPI lifetime and launch facts.
//
// MpiSession owns MPI_Init_thread / MPI_Finalize for one process: main() creates exactly one,
// before anything else touches MPI, and keeps it alive until every communicator is gone.
// It works under mpirun and as a plain process (Open MPI's "singleton" start: a world of 1).
//
// Thread level: MPI_THREAD_FUNNELED. Only the thread that created the session calls MPI; the
// NCCL watchdog threads never do (they exit through _exit, see collective_log.h).
#pragma once

#include <mpi.h>

#include <string>

namespace hydra::parallel {

// Where this process sits among all processes of the run and among those on its node.
struct LaunchInfo {
  int rank = 0;         // rank in MPI_COMM_WORLD
  int world = 1;        // size of MPI_COMM_WORLD
  int local_rank = 0;   // rank among the processes sharing this node (selects the GPU)
  int local_world = 1;  // processes on this node
};

class MpiSession {
 public:
  // Initialises MPI unless it already is (then this session neither owns nor finalizes it).
  // argc/argv may be null. Throws RuntimeFailure if MPI cannot give MPI_THREAD_FUNNELED.
  MpiSession(int* argc, char*** argv);
  MpiSession() : MpiSession(nullptr, nullptr) {}
  // Finalizes MPI if this session initialised it and nobody finalized it yet. Exception:
  // when destroyed while an exception propagates in a multi-rank run, it skips MPI_Finalize
  // (which would wait for ranks that may be blocked waiting for this one); mpirun then ends
  // the job and returns this process's exit code. So main() may simply catch and return the
  // error's code, as long as the session lives inside the try block.
  ~MpiSession();

  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  const LaunchInfo& launch() const { return launch_; }

  // Ends every process of the run with `exit_code` (MPI_Abort on MPI_COMM_WORLD: mpirun then
  // returns that code). For a failure on one rank that the others cannot know about; a
  // failure that every rank sees the same way can simply return from main().
  [[noreturn]] void abort(int exit_code) const;

 private:
  bool owns_mpi_ = false;  // true when this session called MPI_Init_thread
  LaunchInfo launch_;      // queried once at start
};

// Queries LaunchInfo from MPI (needs MPI initialised). Local ranks come from splitting
// `world` by shared-memory domain (MPI_COMM_TYPE_SHARED), i.e. by node.
LaunchInfo query_launch_info(MPI_Comm world);

// This process's rank in MPI_COMM_WORLD, or -1 when MPI is not (or no longer) initialised.
// For error messages only.
int world_rank_or_unknown();

// Throws RuntimeFailure "<file>:<line>: <call> failed on rank R: <MPI_Error_string>".
[[noreturn]] void throw_mpi_error(int code, const char* call, const char* file, int line);

}  // namespace hydra::parallel

// Checks the return code of an MPI call. Only meaningful on communicators whose error
// handler is MPI_ERRORS_RETURN (the MPI default, MPI_ERRORS_ARE_FATAL, aborts first);
// make_mpi_communicator sets it on every communicator it creates.
#define HYDRA_MPI_CHECK(call)                                                       \
  do {                                                                              \
    const int hydra_mpi_rc_ = (call);                                               \
    if (hydra_mpi_rc_ != MPI_SUCCESS) {                                             \
      ::hydra::parallel::throw_mpi_error(hydra_mpi_rc_, #call, __FILE__, __LINE__); \
    }                                                                               \
  } while (0)
