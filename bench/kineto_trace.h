// A Chrome trace of what runs between start and stop: LibTorch operators on the host and
// kernels, copies and memsets on the GPU, through LibTorch's Kineto profiler (CUDA build).
// bench/trace_summary.py reads it.
#pragma once

#include <string>

namespace hydra::bench {

void start_kineto_trace();
// Stops the profiler and writes the trace to `path` (a temporary, then a rename).
void stop_kineto_trace(const std::string& path);

}  // namespace hydra::bench
