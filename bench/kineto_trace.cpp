#include "bench/kineto_trace.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdio>
#include <set>

#include "common/errors.h"

namespace hydra::bench {
namespace {

namespace prof = torch::profiler::impl;

const prof::ProfilerConfig& trace_config() {
  // Input shapes: bench/trace_summary.py names the operators behind the small kernels with them.
  static const prof::ProfilerConfig config(prof::ProfilerState::KINETO, /*report_input_shapes=*/true);
  return config;
}

const std::set<prof::ActivityType>& trace_activities() {
  static const std::set<prof::ActivityType> activities{prof::ActivityType::CPU, prof::ActivityType::CUDA};
  return activities;
}

}  // namespace

void start_kineto_trace() {
  torch::autograd::profiler::prepareProfiler(trace_config(), trace_activities());
  torch::autograd::profiler::enableProfiler(trace_config(), trace_activities());
}

void stop_kineto_trace(const std::string& path) {
  std::unique_ptr<torch::autograd::profiler::ProfilerResult> result = torch::autograd::profiler::disableProfiler();
  HYDRA_CHECK(result, "the profiler returned no result");
  const std::string temp = path + ".tmp";
  result->save(temp);
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    HYDRA_FAIL(common::RuntimeFailure, "cannot write the trace " << path << " (from " << temp << ")");
  }
}

}  // namespace hydra::bench
