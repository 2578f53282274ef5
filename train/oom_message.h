// An out-of-memory error of LibTorch (c10::OutOfMemoryError, 1.13 and 2.x) said as a user
// needs it: where the run was (model build, checkpoint load, forward/backward/optimizer of
// step N, ...), how much was asked and how much was free (parsed from LibTorch's message),
// and which keys to lower. No stack trace: the caller passes what_without_backtrace().
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace hydra::train {

// Where the run is, updated by the training loop as it goes.
struct RunPhase {
  std::string what = "model build";  // "forward", "backward", "optimizer", "evaluation", ...
  int64_t step = 0;                  // the step being computed; 0 before the first
  int micro_batch = 0;               // sequences per forward on this rank, once planned
};

// What the message suggests lowering, with the values of this run.
struct MemoryKnobs {
  int micro_batch = 0;
  int seq_len = 0;
  std::string activation_checkpointing;
  int zero_stage = 0;
};

// "2.00 GiB" of "Tried to allocate 2.00 GiB", and the free memory of either message format
// ("... of which 1.06 GiB is free" in 2.x, "1.06 GiB free" before); nullopt when absent.
std::optional<std::string> oom_requested(const std::string& torch_message);
std::optional<std::string> oom_free(const std::string& torch_message);

std::string out_of_memory_message(const RunPhase& phase, const MemoryKnobs& knobs, const std::string& torch_message);

// Before the first step: a warning when hydra info's predicted peak (train/memory_estimate.h)
// comes within 5% of the device's memory or above, naming what to lower; "" otherwise (and
// when the device's size is unknown: 0).
std::string predicted_memory_warning(double predicted_peak_bytes, double device_bytes, const MemoryKnobs& knobs);

}  // namespace hydra::train
