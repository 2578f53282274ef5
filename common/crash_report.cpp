#include "common/crash_report.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <ucontext.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <initializer_list>

namespace hydra::common {
namespace {

int g_rank = -1;  // read by the signal handler only; set once at start

void write_text(const char* text, int n) {
  if (n > 0) (void)!write(STDERR_FILENO, text, static_cast<size_t>(n));
}

// "module+0xoffset" of a code address: addr2line -e module 0xoffset names the line.
void write_location(const char* label, uintptr_t address) {
  char line[512];
  Dl_info info{};
  if (address != 0 && dladdr(reinterpret_cast<void*>(address), &info) && info.dli_fname) {
    const uintptr_t offset = address - reinterpret_cast<uintptr_t>(info.dli_fbase);
    write_text(line, std::snprintf(line, sizeof(line), "  %s %s+0x%lx\n", label, info.dli_fname,
                                   static_cast<unsigned long>(offset)));
  } else {
    write_text(line, std::snprintf(line, sizeof(line), "  %s 0x%lx\n", label, static_cast<unsigned long>(address)));
  }
}

void on_fatal_signal(int sig, siginfo_t* info, void* context) {
  // Async-signal-safe calls only (dladdr is not formally, but it takes no locks we hold).
  char line[160];
  write_text(line, std::snprintf(line, sizeof(line), "hydra: rank %d: fatal signal %d at address %p; stack:\n",
                                 g_rank, sig, info ? info->si_addr : nullptr));
#if defined(__x86_64__)
  // The faulting instruction and, for a call through a null or stale pointer (pc 0), its
  // caller: the return address on top of the stack. backtrace() cannot unwind such frames.
  const auto* uc = static_cast<const ucontext_t*>(context);
  const auto pc = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
  const auto sp = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RSP]);
  write_location("pc", pc);
  if (pc == 0 && sp != 0) write_location("called from", *reinterpret_cast<const uintptr_t*>(sp));
#else
  (void)context;
#endif
  void* frames[64];
  const int count = backtrace(frames, 64);
  backtrace_symbols_fd(frames, count, STDERR_FILENO);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

}  // namespace

void install_crash_report(int rank) {
  g_rank = rank;
  void* warm[1];
  backtrace(warm, 1);  // loads libgcc now: the first backtrace() may allocate
  struct sigaction action{};
  action.sa_sigaction = on_fatal_signal;
  action.sa_flags = SA_SIGINFO;
  sigemptyset(&action.sa_mask);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) sigaction(sig, &action, nullptr);
}

}  // namespace hydra::common
