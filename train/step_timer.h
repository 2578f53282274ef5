// Where the time of a training step goes, for `hydra bench step`: the device time of each
// phase the trainer enters (forward, backward, gradient reduction and optimizer step), and
// the host time the step took to submit its work.
//
// On CUDA each phase boundary records an event on the current stream, so a phase's time is
// what the device spent between the host reaching its start and the host reaching the next
// one: kernels, plus any idle time while the device waited for the host (a host-bound step
// shows phases as long as their submission). On the CPU the clock is read instead (there the
// work is done when the call returns).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace hydra::train {

struct StepPhases {
  int steps = 0;                           // steps timed
  double step_ms = 0;                      // wall time per step, first phase mark to the end of the last step
  double host_submit_ms = 0;               // host time from begin_step() to end_step(), per step
  std::map<std::string, double> phase_ms;  // device time per phase, per step
};

class StepTimer {
 public:
  explicit StepTimer(bool cuda);
  ~StepTimer();
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;

  void begin_step();
  // The phase that starts now (Run's enter() calls it); the step's first phase starts at begin_step().
  void mark(const char* phase);
  void end_step();
  // Waits for the device, then the means over the steps between begin_step() and end_step().
  StepPhases finish();

 private:
  struct Marks;
  std::unique_ptr<Marks> marks_;
};

}  // namespace hydra::train
