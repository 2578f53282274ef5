// Preemption: SIGTERM, SIGINT (Ctrl-C) or SIGUSR1 on any rank asks the run to save a
// checkpoint at the next step boundary and stop with exit code 75 (docs/INTERFACE.md), so a
// Slurm script can requeue and a user's Ctrl-C loses no work. A second SIGINT stops the
// process at once (the default action), for a user who does not want to wait for the save.
// The signal handler only sets a flag; at each step boundary every rank contributes its flag
// to one all-reduce (max) over the world, so all ranks agree on the same step even when the
// signal reached only some of them.
#pragma once

#include "parallel/communicator.h"

namespace hydra::train {

// Installs the handlers (idempotent). Returns nothing; the flag starts cleared.
void install_preemption_handlers();

// This process received SIGTERM, SIGINT or SIGUSR1 since the handlers were installed, or the
// file that HYDRA_STOP_FILE names exists (scripts/hydra-mpirun creates it when signalled).
bool preemption_signalled();

// Tells scripts/hydra-mpirun that every rank can now take its forwarded SIGUSR1: after one
// collective over `world` (every rank has installed its handlers before it), rank 0 creates
// HYDRA_STOP_FILE's name + ".armed". Until then the script does not forward the signal, whose
// default action would kill a rank still loading (the stop file carries the request).
// Nothing without HYDRA_STOP_FILE. Every rank must call it, after install_preemption_handlers.
void arm_forwarded_signals(parallel::Communicator* world, const at::TensorOptions& device);

// Whether any rank was signalled: one all-reduce (max) over `world` (null: this process).
// Every rank must call it at the same step.
bool preemption_agreed(parallel::Communicator* world, const at::TensorOptions& device);

}  // namespace hydra::train
