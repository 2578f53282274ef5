// A second stream of a device, for work that should run beside the compute stream (the
// gradient collectives during backward, parallel/grad_overlap.h), and the two waits that make
// it safe. Device-generic (c10::Stream / c10::Event): no CUDA headers, one code path for both
// builds. On the CPU there are no streams: MPI calls complete before they return, so every
// method is a no-op and there is no stream().
#pragma once

#include <c10/core/Device.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/util/Optional.h>

#include <memory>

namespace hydra::parallel {

class SideStream {
 public:
  // CUDA: a stream from the device's pool; CPU: inactive.
  explicit SideStream(c10::Device device);

  bool active() const { return stream_.has_value(); }

  // The side stream waits for everything enqueued so far on the calling thread's current
  // stream (e.g. the gradients backward has written).
  void wait_for_current();
  // The calling thread's current stream waits for everything enqueued so far on the side
  // stream (e.g. before the optimizer reads the reduced gradients).
  void current_waits();
  // Records `event` on the side stream / makes the current stream wait on it (no-op for an
  // event never recorded). For buffers the side stream must be done with before reuse.
  void record(c10::Event& event);
  void current_waits_on(const c10::Event& event);

  // The side stream (none on the CPU), for a c10::OptionalStreamGuard: while the guard
  // lives, work goes to the side stream.
  c10::optional<c10::Stream> stream() const { return stream_; }

  c10::DeviceType device_type() const { return device_.type(); }

 private:
  c10::Stream current() const;
  c10::Device device_;
  c10::optional<c10::Stream> stream_;
  std::unique_ptr<c10::Event> handoff_;  // reused for each wait
};

}  // namespace hydra::parallel
