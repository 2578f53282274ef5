// Keeping freed heap memory in the process for the next step's tensors (glibc malloc).
//
// A training step on the CPU allocates and frees the same tensors every step, most of them a
// few MB. glibc's defaults give each block above a threshold (128 KiB at first) its own mmap,
// unmapped again on free, and give the top of the heap back to the kernel past 128 KiB free:
// so every step page-faults its buffers anew, and the kernel zeroes each page first. On the tiny
// model (bytes vocabulary, 8 x 64 tokens, one thread) that was 65 of a 211 ms step, almost all
// of it in the optimizer's phase (docs/PERF.md, 2026-12-04). Raising both thresholds keeps
// freed blocks for reuse; the price is that the process's resident memory stays at its peak
// instead of shrinking between steps, which a trainer reaches again every step anyway.
#pragma once

namespace hydra::common {

// Sets glibc's mmap threshold to its maximum (32 MiB: larger blocks are still mapped apart)
// and the trim threshold to 1 GiB, unless GLIBC_TUNABLES already sets any glibc.malloc
// tunable (the user's choice wins). Call once at the start of main, before the first large
// allocation. A no-op on another C library. Returns whether it changed the settings.
bool keep_freed_heap_for_reuse();

}  // namespace hydra::common
