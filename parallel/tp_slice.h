// One tensor-parallel rank's arithmetic, timed in one process: `hydra bench step --tp-slice N`
// builds the model as rank 0 of a tp group of N whose collectives move nothing, so the step it
// times is what a rank of tp N computes without its communication. `hydra plan` sets it beside
// a whole-model run to tell the work tp divides among its ranks (the sliced matrix products)
// from the work every rank repeats at full width (norms, residual adds, routers, the embedding):
// docs/SCALING.md. The numbers such a step computes are not a training run's (no rank adds the
// others' partial sums); only its time and shapes are.
#pragma once

#include <memory>
#include <string>

#include "parallel/communicator.h"
#include "parallel/parallel_context.h"

namespace hydra::parallel {

// Rank 0 of a group of `size` ranks that has no peers: all_reduce and broadcast leave the
// tensor as it is, reduce_scatter copies this rank's part, all_gather writes the input into
// every part; point-to-point calls throw (a tp group has none). Calls and payload bytes are
// counted as a real group's would be; host waits are zero. Any device.
std::unique_ptr<Communicator> make_tp_slice_communicator(int size);

// The context of such a run: a one-process MPI world (world, dp and pp groups of one rank, of
// `backend`), the grid of dp 1 x tp `tp` x pp 1 at rank 0, and the slice communicator as tp.
// Needs one process and tp >= 2.
std::unique_ptr<ParallelContext> make_tp_slice_context(int tp, const std::string& backend, double timeout_s);

}  // namespace hydra::parallel
