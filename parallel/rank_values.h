// A few numbers from every rank, for a report that rank 0 writes about all of them (`hydra
// bench step`: each rank's waits and memory). One all_gather over the world communicator.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "parallel/communicator.h"

namespace hydra::parallel {

// Every rank's `values` (the same count on each rank), on every rank: row r holds world
// rank r's, bit for bit (float64). Collective over `world`; `device` is where the backend
// takes tensors (CPU for MPI, the rank's GPU for NCCL). NaN travels as NaN.
std::vector<std::vector<double>> gather_rank_values(Communicator& world, const std::vector<double>& values,
                                                    const at::Device& device);

}  // namespace hydra::parallel
