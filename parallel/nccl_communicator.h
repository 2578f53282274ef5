// The NCCL backend of Communicator: CUDA tensors (CUDA build only; contract in
// communicator.h).
//
// Stream contract: every call is enqueued on the *current* CUDA stream of the tensor's device
// (c10::cuda::getCurrentCUDAStream) and returns at once; later work on that stream sees the
// result. Work on another stream must wait on this one (event), and a tensor used from
// another stream needs record_stream. barrier() is the exception: it also blocks the host
// until the stream has reached it.
//
// Host waits (Communicator::host_wait): not measured, nullopt. The host does not block on a
// transfer (barrier aside), so the time a rank waits for its peers is device time.
//
// Ordering: all ranks call the same collectives in the same order. send/recv are single NCCL
// operations (not grouped), so a pair exchange must be ordered to avoid a cycle (e.g. even
// ranks send first, odd ranks receive first).
//
// dtypes: fp32, fp64 and bf16 natively (ncclBfloat16; sums accumulate in bf16 inside NCCL —
// reduce gradients in fp32 where accuracy matters). kAvg is ncclAvg.
// Uneven reduce_scatter/all_gather: the buffer is padded to ceil(n/size)*size in a temporary
// (allocated on the same stream, so the caching allocator keeps it alive for the kernel).
//
// Timeouts: after each call an event is recorded and a per-communicator watchdog polls it
// (one thread asks CUDA, a second one only watches the clock, so that a CUDA call blocked
// behind another thread cannot hide a timeout). A call's clock starts when it was enqueued
// or when the previous call of this communicator completed, whichever is later (a queue of
// calls behind slow compute does not count against the later ones). On expiry, or on an
// asynchronous NCCL error, the watchdog logs the report and exits the process with code 4 at
// once (_exit: the watchdog must not call MPI; mpirun returns 4, see collective_log.h). It
// does not call ncclCommAbort first: that would release the host thread waiting on the stuck
// call to run on with a wrong result (observed on H200).
//
// Bootstrap: make_nccl_world_communicator (rank 0's ncclGetUniqueId sent with MPI_Bcast,
// ncclCommInitRank); groups are split from it with split_nccl_communicator (ncclCommSplit).
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace hydra::parallel {

// The world communicator. Collective over `world` (MPI). Selects CUDA device `device`
// (normally LaunchInfo::local_rank) for this process first.
std::unique_ptr<Communicator> make_nccl_world_communicator(MPI_Comm world, int device,
                                                           double timeout_s);

// A group split from `parent` (which must come from this file). Collective over ALL ranks of
// `parent`, in the same order on each: ncclCommSplit. `world_ranks` lists the group in
// group-rank order and must contain this rank; groups of one split must be disjoint (the
// group's smallest world rank is its color).
std::unique_ptr<Communicator> split_nccl_communicator(Communicator& parent,
                                                      const std::vector<int>& world_ranks,
                                                      std::string name, double timeout_s);

// Throw RuntimeFailure "<file>:<line>: <call> failed on rank R: <library message>".
[[noreturn]] void throw_nccl_error(int code, const char* call, const char* file, int line);
[[noreturn]] void throw_cuda_error(int code, const char* call, const char* file, int line);

}  // namespace hydra::parallel

// Check macros for code that includes <nccl.h> / <cuda_runtime.h>.
#define HYDRA_NCCL_CHECK(call)                                                               \
  do {                                                                                       \
    const ncclResult_t hydra_nccl_rc_ = (call);                                              \
    if (hydra_nccl_rc_ != ncclSuccess) {                                                     \
      ::hydra::parallel::throw_nccl_error(static_cast<int>(hydra_nccl_rc_), #call, __FILE__, \
                                          __LINE__);                                         \
    }                                                                                        \
  } while (0)

#define HYDRA_CUDA_CHECK(call)                                                               \
  do {                                                                                       \
    const cudaError_t hydra_cuda_rc_ = (call);                                               \
    if (hydra_cuda_rc_ != cudaSuccess) {                                                     \
      ::hydra::parallel::throw_cuda_error(static_cast<int>(hydra_cuda_rc_), #call, __FILE__, \
                                          __LINE__);                                         \
    }                                                                                        \
  } while (0)
