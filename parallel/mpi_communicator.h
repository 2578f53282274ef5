// The MPI backend of Communicator: CPU tensors, the CI backend (contract in communicator.h).
//
// Every call is a non-blocking MPI operation (MPI_Iallreduce, MPI_Ireduce_scatter,
// MPI_Iallgatherv, MPI_Ibcast, MPI_Isend/MPI_Irecv, MPI_Ibarrier) completed by a loop of
// MPI_Test against the deadline start + timeout_s (poll_wait.h): it polls back to back with a
// yield in between and never sleeps, because Open MPI advances the call only inside MPI_Test,
// and the yield leaves an oversubscribed core to the rank being waited for. On expiry the call logs the timeout report (collective_log.h) and ends the run
// with MPI_Abort(MPI_COMM_WORLD, 4); it does not return or throw.
//
// Ordering and waiting: calls return when the result is in place (and, for send, when the
// buffer may be reused; a large send waits for the matching recv). Calls on one
// communicator must come from the thread that owns MPI (MPI_THREAD_FUNNELED).
//
// Host waits (Communicator::host_wait): the time each call spends in that MPI_Test loop, added
// up per kind of call (collectives, receives, sends).
//
// dtypes: fp32 and fp64 are reduced natively. bf16 is reduced in fp32 (converted, reduced,
// averaged, rounded back once): MPI has no bf16 type, and summing in fp32 is also the more
// accurate choice. Broadcast, all_gather, send and recv move bf16 as raw 16-bit words.
//
// Limits: counts are MPI ints, so a tensor (and every part of one) is at most 2^31-1
// elements; larger ones are refused with RuntimeFailure.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace hydra::parallel {

// Creates the communicator over `world_ranks` (ranks of `parent`, normally MPI_COMM_WORLD;
// list order = group rank order) with MPI_Comm_create_group. Collective over the members of
// the group only (not over all of `parent`), so each rank builds just its own groups; ranks
// must build their groups in the same order (e.g. world, tp, dp, pp), and groups of the same
// `name` must be disjoint (the name selects the creation tag). Blocks until every member
// has called it. Throws RuntimeFailure if this rank is not in `world_ranks`, the list is
// invalid, or timeout_s <= 0.
std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm parent,
                                                    const std::vector<int>& world_ranks,
                                                    std::string name, double timeout_s);

}  // namespace hydra::parallel
