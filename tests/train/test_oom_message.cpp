// train/oom_message.h against real LibTorch out-of-memory messages (2.x's format from an H100
// and 1.13/2.0's), as a CPU build cannot run out of GPU memory.
#include <gtest/gtest.h>

#include <string>

#include "train/oom_message.h"

namespace {

using hydra::train::MemoryKnobs;
using hydra::train::RunPhase;

const std::string kTorch2 =
    "CUDA out of memory. Tried to allocate 48.00 GiB. GPU 0 has a total capacity of 139.72 GiB of which 31.94 GiB "
    "is free. Including non-PyTorch memory, this process has 107.77 GiB memory in use. Of the allocated memory "
    "105.02 GiB is allocated by PyTorch, and 1.19 GiB is reserved by PyTorch but unallocated. If reserved but "
    "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid "
    "fragmentation.  See documentation for Memory Management  "
    "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)";
const std::string kTorch1 =
    "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity; 13.20 GiB already allocated; "
    "1.06 GiB free; 13.50 GiB reserved in total by PyTorch) If reserved memory is >> allocated memory try setting "
    "max_split_size_mb to avoid fragmentation.  See documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF";

TEST(OomMessage, ParsesBothFormats) {
  EXPECT_EQ(hydra::train::oom_requested(kTorch2).value_or("-"), "48.00 GiB");
  EXPECT_EQ(hydra::train::oom_free(kTorch2).value_or("-"), "31.94 GiB");
  EXPECT_EQ(hydra::train::oom_requested(kTorch1).value_or("-"), "2.00 GiB");
  EXPECT_EQ(hydra::train::oom_free(kTorch1).value_or("-"), "1.06 GiB");
  EXPECT_FALSE(hydra::train::oom_requested("DefaultCPUAllocator: not enough memory"));
}

TEST(OomMessage, NamesTheStepAndWhatToLower) {
  RunPhase phase;
  phase.what = "forward";
  phase.step = 12;
  const std::string message = hydra::train::out_of_memory_message(phase, MemoryKnobs{4, 32768, "none", 1}, kTorch2);
  EXPECT_EQ(message,
            "out of memory in the forward of step 12: tried to allocate 48.00 GiB with 31.94 GiB free. Lower "
            "train.micro_batch (now 4) or train.seq_len (now 32768), or set train.activation_checkpointing to "
            "mlp, layer or block (now none; hydra info prints the peak of each)");
}

TEST(OomMessage, ModelBuildPointsAtTheState) {
  const std::string message = hydra::train::out_of_memory_message(RunPhase{}, MemoryKnobs{1, 256, "block", 0}, kTorch1);
  EXPECT_EQ(message,
            "out of memory in the model build: tried to allocate 2.00 GiB with 1.06 GiB free. The weights and "
            "optimizer state do not fit: raise parallel.zero_stage (now 0), parallel.tp or parallel.pp, or use a "
            "device with more memory");
}

TEST(OomMessage, UnknownFormatKeepsTheFirstLine) {
  RunPhase phase;
  phase.what = "backward";
  phase.step = 3;
  const std::string message =
      hydra::train::out_of_memory_message(phase, MemoryKnobs{2, 64, "block", 0}, "allocator said no\nframe #0: ...");
  EXPECT_EQ(message, "out of memory in the backward of step 3 (allocator said no). Lower train.micro_batch (now 2) or "
                     "train.seq_len (now 64)");
}

// Before the first step: hydra info's predicted peak against the device's memory.
TEST(OomMessage, PredictedPeakAboveTheDeviceWarnsBeforeTheFirstStep) {
  const MemoryKnobs knobs{8, 1024, "mlp", 0};
  EXPECT_EQ(hydra::train::predicted_memory_warning(150e9, 143.7e9, knobs),
            "the predicted peak of 150.0 GB per GPU is 104% of this GPU's 143.7 GB: the first step will likely run "
            "out of memory; lower train.micro_batch (now 8) or train.seq_len (now 1024), or set "
            "train.activation_checkpointing to layer or block (now mlp; hydra info prints the peak of each), or raise "
            "parallel.zero_stage (now 0), parallel.tp or parallel.pp");
  EXPECT_NE(hydra::train::predicted_memory_warning(138e9, 143.7e9, knobs), "");  // within 5%: the estimate runs low
  EXPECT_EQ(hydra::train::predicted_memory_warning(130e9, 143.7e9, knobs), "");
  EXPECT_EQ(hydra::train::predicted_memory_warning(150e9, 0, knobs), "") << "unknown device size: no warning";
}

}  // namespace
