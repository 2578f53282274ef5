// On a fatal signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) print the rank and a stack
// trace to stderr, then die by the same signal: a crash on one of many ranks names itself.
#pragma once

namespace hydra::common {

void install_crash_report(int rank);

}  // namespace hydra::common
