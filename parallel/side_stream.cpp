#include "parallel/side_stream.h"

#include <c10/core/impl/VirtualGuardImpl.h>

namespace hydra::parallel {

SideStream::SideStream(c10::Device device) : device_(device) {
  if (device.type() == c10::DeviceType::CPU) return;
  c10::impl::VirtualGuardImpl impl(device.type());
  if (!device_.has_index()) device_ = impl.getDevice();
  // High priority: the collectives should not queue behind backward's kernels.
  stream_ = impl.getStreamFromGlobalPool(device_, /*isHighPriority=*/true);
  handoff_ = std::make_unique<c10::Event>(device_.type());
}

c10::Stream SideStream::current() const { return c10::impl::VirtualGuardImpl(device_.type()).getStream(device_); }

void SideStream::wait_for_current() {
  if (!active()) return;
  handoff_->record(current());
  handoff_->block(*stream_);
}

void SideStream::current_waits() {
  if (!active()) return;
  handoff_->record(*stream_);
  handoff_->block(current());
}

void SideStream::record(c10::Event& event) {
  if (active()) event.record(*stream_);
}

void SideStream::current_waits_on(const c10::Event& event) {
  if (active() && event.was_marked_for_recording()) event.block(current());
}

}  // namespace hydra::parallel
