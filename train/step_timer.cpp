#include "train/step_timer.h"

#include <chrono>

#include "common/errors.h"
#include "train/device_memory.h"

#ifdef HYDRA_CUDA
#include <ATen/cuda/CUDAEvent.h>
#endif

namespace hydra::train {
namespace {
using Clock = std::chrono::steady_clock;
}

// One mark per phase boundary; a step is the marks from its begin to its end.
struct StepTimer::Marks {
  bool cuda = false;
  struct Mark {
    std::string phase;  // the phase that starts here; "" ends the step
    Clock::time_point host;
#ifdef HYDRA_CUDA
    std::unique_ptr<at::cuda::CUDAEvent> event;
#endif
  };
  std::vector<Mark> marks;
  bool in_step = false;
  int steps = 0;
  double host_submit_ms = 0;
  Clock::time_point step_begin;

  void add(std::string phase) {
    Mark m;
    m.phase = std::move(phase);
    m.host = Clock::now();
#ifdef HYDRA_CUDA
    if (cuda) {
      m.event = std::make_unique<at::cuda::CUDAEvent>(cudaEventDefault);
      m.event->record();  // on the current stream, where the step's kernels go
    }
#endif
    marks.push_back(std::move(m));
  }

  // Milliseconds between two marks: device time on CUDA (after a synchronize), host time on the CPU.
  double between(const Mark& a, const Mark& b) const {
#ifdef HYDRA_CUDA
    if (cuda) return a.event->elapsed_time(*b.event);
#endif
    return std::chrono::duration<double, std::milli>(b.host - a.host).count();
  }
};

StepTimer::StepTimer(bool cuda) : marks_(std::make_unique<Marks>()) { marks_->cuda = cuda; }
StepTimer::~StepTimer() = default;

void StepTimer::begin_step() {
  HYDRA_CHECK(!marks_->in_step, "StepTimer: begin_step() twice without end_step()");
  marks_->in_step = true;
  marks_->step_begin = Clock::now();
  marks_->add("step start");  // until the first phase: zero_grad
}

void StepTimer::mark(const char* phase) {
  if (marks_->in_step) marks_->add(phase);  // phases outside a timed step (evaluation) are not counted
}

void StepTimer::end_step() {
  HYDRA_CHECK(marks_->in_step, "StepTimer: end_step() without begin_step()");
  marks_->add("");
  marks_->in_step = false;
  marks_->steps += 1;
  marks_->host_submit_ms += std::chrono::duration<double, std::milli>(Clock::now() - marks_->step_begin).count();
}

StepPhases StepTimer::finish() {
  HYDRA_CHECK(!marks_->in_step, "StepTimer: finish() inside a step");
  synchronize_device(marks_->cuda);
  StepPhases out;
  out.steps = marks_->steps;
  if (out.steps == 0) return out;
  const auto& m = marks_->marks;
  for (size_t i = 0; i + 1 < m.size(); ++i) {
    // From a step's end to the next step's start is between steps: no phase.
    if (!m[i].phase.empty()) out.phase_ms[m[i].phase] += marks_->between(m[i], m[i + 1]);
  }
  out.step_ms = marks_->between(m.front(), m.back()) / out.steps;
  for (auto& [phase, ms] : out.phase_ms) ms /= out.steps;
  out.host_submit_ms = marks_->host_submit_ms / out.steps;
  return out;
}

}  // namespace hydra::train
