#include "train/preemption.h"

#include <ATen/ATen.h>

#include <sys/stat.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace hydra::train {
namespace {

std::atomic<bool> g_signalled{false};  // set by the handler (lock-free, async-signal-safe)

void on_preemption_signal(int) { g_signalled.store(true); }

// The launcher's request in a file (HYDRA_STOP_FILE, set by scripts/hydra-mpirun for the ranks
// it starts): mpirun forwards a signal only to ranks that already run, so one that comes while
// it is still starting them would be lost; the file outlives that moment. One stat a step.
bool stop_file_present() {
  const char* path = std::getenv("HYDRA_STOP_FILE");
  struct stat info{};
  return path != nullptr && *path != '\0' && ::stat(path, &info) == 0;
}

}  // namespace

void install_preemption_handlers() {
  struct sigaction action{};
  action.sa_handler = on_preemption_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // blocking calls (file I/O, MPI polling) continue
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
  // Ctrl-C: the first one saves like SIGTERM; SA_RESETHAND restores the default action, so a
  // second one stops the process at once (a save it cuts short is left uncommitted).
  action.sa_flags |= SA_RESETHAND;
  sigaction(SIGINT, &action, nullptr);
}

bool preemption_signalled() { return g_signalled.load() || stop_file_present(); }

void arm_forwarded_signals(parallel::Communicator* world, const at::TensorOptions& device) {
  const char* path = std::getenv("HYDRA_STOP_FILE");
  if (path == nullptr || *path == '\0') return;
  if (world && world->size() > 1) {
    at::Tensor ready = at::ones({1}, device.dtype(at::kFloat));
    world->all_reduce(ready, parallel::ReduceOp::kSum);  // returns once every rank has called it
  }
  if (world && world->rank() != 0) return;
  if (std::FILE* marker = std::fopen((std::string(path) + ".armed").c_str(), "w")) std::fclose(marker);
}

bool preemption_agreed(parallel::Communicator* world, const at::TensorOptions& device) {
  if (!world || world->size() == 1) return preemption_signalled();
  at::Tensor flag = at::full({1}, preemption_signalled() ? 1.0 : 0.0, device.dtype(at::kFloat));
  world->all_reduce(flag, parallel::ReduceOp::kMax);
  return flag.cpu().item<float>() > 0.5f;
}

}  // namespace hydra::train
