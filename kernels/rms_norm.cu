// Fused RMSNorm, forward and backward (launchers in rms_norm.h).
//
// Design invariants
// - One group of `lanes` lanes per row (lanes = the smallest power of two >= n / VEC, at most
//   32), so short rows (head size 64: 8 lanes) do not leave most of a warp idle. Each lane
//   walks its row in VEC-element vectors (16 bytes: 8 bf16 or 4 float32) when n and every base
//   pointer allow, else element by element.
// - Two passes over a row: the sum (of squares, or of g * xhat) reduced across the row's lanes
//   with shuffles, then the outputs. The forward's second pass re-reads the row, which the first
//   pass has just brought into L1/L2; nothing is staged in shared memory. The backward of
//   vectorised rows of up to 8 vectors a lane (bf16 n <= 2048) keeps its lane's part of the row
//   in registers instead (x, dy and, add form, dh as raw 16-byte packs): every load of a row is
//   issued before the first is used, and nothing is read twice. Streaming them one vector at a
//   time, as longer rows still do, left the add-form backward at 2.8 TB/s on small (44 us a
//   call; one 16-byte load of each array in flight a lane).
// - Rows past the end still take part in the shuffles (every lane of a warp must), then write
//   nothing.
// - Arithmetic in float32; intermediates are rounded to the storage type where the unfused
//   LibTorch ops hold them in it (vector_io::round_to), so the result differs from those ops by
//   reduction order only.
// - The weight gradient is a column sum over rows: per-block float32 partials over a fixed
//   chunk of rows, then a last kernel adds the partials in chunk order. No atomics: bitwise
//   reproducible. With one weight row and vectorised rows the partials are taken in the dx
//   pass itself (each row group keeps its columns' sums in its own row of shared memory over
//   the block's chunk, then the block adds the rows in order), so x and dy are read once; it
//   was a separate pass re-reading both (1.4 ms of a 63 ms step on small). Otherwise (per-head
//   norms, misaligned rows) that separate pass still runs: threads of a block split the
//   chunk's rows, then add their sums in thread order through shared memory.
#include "kernels/rms_norm.h"

#include <algorithm>
#include <type_traits>

#include "kernels/vector_io.cuh"

namespace hydra::kernels {
namespace {

using vector_io::bf16;
using vector_io::group_sum;
using vector_io::load;
using vector_io::round_to;
using vector_io::store;

constexpr int kThreads = 256;

struct RowArgs {
  int64_t rows = 0;
  int n = 0, groups = 1, lanes = 32;
  float eps = 0.f, alpha = 1.f;
  const void* x = nullptr;   // forward input (backward: the normalised input, x or h)
  const void* y = nullptr;   // add form: the residual branch
  const void* weight = nullptr;
  const void* dy = nullptr;  // backward: gradient of the norm's output
  const void* dh = nullptr;  // add-form backward: gradient of h
  void* out = nullptr;       // forward: the norm's output; backward: dx
  void* h = nullptr;         // add-form forward: h; add-form backward: d(branch)
  float* rstd = nullptr;
};

// Forward. ADD: h = x + alpha * y first, normalised in its place.
template <typename T, int VEC, bool ADD>
__global__ void __launch_bounds__(kThreads) forward_kernel(const RowArgs a) {
  const int sub = threadIdx.x % a.lanes;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / a.lanes;
  const bool live = row < a.rows;
  const int64_t base = live ? row * a.n : 0;
  const T* x = static_cast<const T*>(a.x) + base;
  T* h = ADD ? static_cast<T*>(a.h) + base : nullptr;
  float ss = 0.f;
  if (live) {
    for (int c = sub * VEC; c < a.n; c += a.lanes * VEC) {
      float v[VEC];
      load<T, VEC>(x + c, v);
      if constexpr (ADD) {
        float yv[VEC];
        load<T, VEC>(static_cast<const T*>(a.y) + base + c, yv);
#pragma unroll
        for (int k = 0; k < VEC; ++k) v[k] = round_to<T>(v[k] + round_to<T>(a.alpha * yv[k]));
        store<T, VEC>(h + c, v);
      }
#pragma unroll
      for (int k = 0; k < VEC; ++k) ss += v[k] * v[k];
    }
  }
  ss = group_sum(ss, a.lanes);
  if (!live) return;
  const float rs = rsqrtf(ss / static_cast<float>(a.n) + a.eps);
  if (sub == 0) a.rstd[row] = rs;
  const T* src = ADD ? h : x;  // h: this thread's own writes of the first pass
  const T* w = static_cast<const T*>(a.weight) + (row % a.groups) * a.n;
  T* out = static_cast<T*>(a.out) + base;
  for (int c = sub * VEC; c < a.n; c += a.lanes * VEC) {
    float v[VEC], wv[VEC];
    load<T, VEC>(src + c, v);
    load<T, VEC>(w + c, wv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) v[k] = round_to<T>(v[k] * rs) * wv[k];
    store<T, VEC>(out + c, v);
  }
}

// g = dy * w is the gradient of the rounded normalised input; the row's dot of g with xhat,
// summed over its lanes (every lane of the warp must call it).
template <typename T, int VEC>
__device__ __forceinline__ float row_dot(const RowArgs& a, const T* x, const T* dy, const T* w, float rs, bool live,
                                         int sub) {
  float dot = 0.f;
  if (live) {
    for (int c = sub * VEC; c < a.n; c += a.lanes * VEC) {
      float xv[VEC], gv[VEC], wv[VEC];
      load<T, VEC>(x + c, xv);
      load<T, VEC>(dy + c, gv);
      load<T, VEC>(w + c, wv);
#pragma unroll
      for (int k = 0; k < VEC; ++k) dot += round_to<T>(gv[k] * wv[k]) * (xv[k] * rs);
    }
  }
  return group_sum(dot, a.lanes);
}

// The add form's last step on one vector: d (the norm's input gradient) plus dh, the gradient
// that reached h directly, summed in the storage type as autograd sums them; alpha times that
// is the branch's gradient, stored to a.h when asked.
template <typename T, int VEC>
__device__ __forceinline__ void add_residual_gradient(const RowArgs& a, int64_t base, int c, const float (&dh)[VEC],
                                                      float (&d)[VEC]) {
  float db[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    d[k] = round_to<T>(dh[k] + round_to<T>(d[k]));
    db[k] = a.alpha * d[k];
  }
  if (a.h != nullptr) store<T, VEC>(static_cast<T*>(a.h) + base + c, db);
}

// The second pass on one vector (columns c .. c + VEC) of a row: dx (ADD: also the branch
// gradient). DW: adds dy * round(xhat) of element k into dw[k * dw_stride] (shared memory, in
// the dw kernel's layout), before dx is stored (dx may alias dy).
template <typename T, int VEC, bool ADD, bool DW>
__device__ __forceinline__ void backward_vector(const RowArgs& a, int64_t base, int c, const T* w, float rs, float mean,
                                                float* dw, int dw_stride) {
  float xv[VEC], gv[VEC], wv[VEC], d[VEC];
  load<T, VEC>(static_cast<const T*>(a.x) + base + c, xv);
  load<T, VEC>(static_cast<const T*>(a.dy) + base + c, gv);
  load<T, VEC>(w + c, wv);
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    d[k] = rs * (round_to<T>(gv[k] * wv[k]) - xv[k] * rs * mean);
    if constexpr (DW) dw[k * dw_stride] += gv[k] * round_to<T>(xv[k] * rs);
  }
  if constexpr (ADD) {
    float dh[VEC];
    load<T, VEC>(static_cast<const T*>(a.dh) + base + c, dh);
    add_residual_gradient<T, VEC>(a, base, c, dh, d);
  }
  store<T, VEC>(static_cast<T*>(a.out) + base + c, d);
}

// A 16-byte vector of a row kept as raw bits between the two passes of the cached backward.
// After the first pass each is passed through an empty asm statement: the compiler must then
// unpack it again in the second pass rather than keep the first pass's float32 copies live
// (8 registers a vector instead of 4: at NV 4 that spilled).
template <typename T, int VEC>
__device__ __forceinline__ uint4 load_bits(const T* p) {
  return *reinterpret_cast<const uint4*>(p);
}
__device__ __forceinline__ void launder(uint4& v) { asm volatile("" : "+r"(v.x), "+r"(v.y), "+r"(v.z), "+r"(v.w)); }

template <typename T, int VEC>
__device__ __forceinline__ void bits_to_float(const uint4& v, float (&out)[VEC]) {
  static_assert(VEC * sizeof(T) == 16, "one 16-byte vector");
  vector_io::unpack<T, VEC>(*reinterpret_cast<const vector_io::Pack<T, VEC>*>(&v), out);
}

// One row's backward from registers: lane `sub` holds vectors sub, sub + lanes, ... (at most NV)
// of the row, loaded all at once. Same arithmetic, in the same order, as row_dot followed by
// backward_vector over the row (bitwise the same results). Every lane of the warp must call it.
template <typename T, int VEC, int NV, bool ADD, bool DW>
__device__ __forceinline__ void backward_row_cached(const RowArgs& a, int64_t row, bool live, int sub, float* dw) {
  const int64_t base = live ? row * a.n : 0;
  const T* x = static_cast<const T*>(a.x) + base;
  const T* dy = static_cast<const T*>(a.dy) + base;
  const T* w = static_cast<const T*>(a.weight) + (live ? (row % a.groups) * a.n : 0);
  // More than one vector a lane only when the row has more vectors than 32 lanes, so the
  // lanes are then 32: a constant, so that vector i sits at an immediate offset from one
  // address per array (a runtime stride kept an address per vector and array live: spills).
  const int lanes = NV > 1 ? 32 : a.lanes;
  uint4 xr[NV], gr[NV], hr[ADD ? NV : 1];
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int c = (sub + i * lanes) * VEC;
    if (live && c < a.n) {
      xr[i] = load_bits<T, VEC>(x + c);
      gr[i] = load_bits<T, VEC>(dy + c);
      if constexpr (ADD) hr[i] = load_bits<T, VEC>(static_cast<const T*>(a.dh) + base + c);
    }
  }
  const float rs = live ? a.rstd[row] : 0.f;
  float dot = 0.f;
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int c = (sub + i * lanes) * VEC;
    if (!live || c >= a.n) continue;
    float xv[VEC], gv[VEC], wv[VEC];
    bits_to_float<T, VEC>(xr[i], xv);
    bits_to_float<T, VEC>(gr[i], gv);
    load<T, VEC>(w + c, wv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) dot += round_to<T>(gv[k] * wv[k]) * (xv[k] * rs);
  }
  dot = group_sum(dot, a.lanes);
  if (!live) return;
  const float mean = dot / static_cast<float>(a.n);
  const int vectors = a.n / VEC;  // the stride of the weight-gradient sums (DW)
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    launder(xr[i]);
    launder(gr[i]);
  }
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int c = (sub + i * lanes) * VEC;
    if (c >= a.n) continue;
    float xv[VEC], gv[VEC], wv[VEC], d[VEC];
    bits_to_float<T, VEC>(xr[i], xv);
    bits_to_float<T, VEC>(gr[i], gv);
    load<T, VEC>(w + c, wv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      d[k] = rs * (round_to<T>(gv[k] * wv[k]) - xv[k] * rs * mean);
      if constexpr (DW) dw[k * vectors + sub + i * lanes] += gv[k] * round_to<T>(xv[k] * rs);  // c / VEC = sub + i lanes
    }
    if constexpr (ADD) {
      float dh[VEC];
      bits_to_float<T, VEC>(hr[i], dh);
      add_residual_gradient<T, VEC>(a, base, c, dh, d);
    }
    store<T, VEC>(static_cast<T*>(a.out) + base + c, d);
  }
}

// Blocks of 256 threads a multiprocessor must hold (so registers a thread may use: 64, 85, 255).
// The add form holds three arrays of NV 4-register packs (NV 4: 48 registers, 96 at NV 8): a
// tighter bound spills. Occupancy matters less than usual here: each lane has 3 NV loads in
// flight, so even one block a multiprocessor keeps more bytes in flight than the memory needs.
template <int NV>
constexpr int cached_min_blocks() { return NV <= 3 ? 4 : NV == 4 ? 3 : 1; }

// Backward for dx (ADD: also the branch gradient), the row in registers (NV > 0, groups of any
// count) or streamed (NV 0); the weight gradient is a separate pass.
template <typename T, int VEC, int NV, bool ADD>
__global__ void __launch_bounds__(kThreads, cached_min_blocks<NV>()) backward_cached_kernel(const RowArgs a) {
  const int sub = threadIdx.x % a.lanes;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / a.lanes;
  backward_row_cached<T, VEC, NV, ADD, false>(a, row, row < a.rows, sub, nullptr);
}

// Backward for dx (ADD: also the branch gradient); the weight gradient is a separate pass.
template <typename T, int VEC, bool ADD>
__global__ void __launch_bounds__(kThreads) backward_kernel(const RowArgs a) {
  const int sub = threadIdx.x % a.lanes;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / a.lanes;
  const bool live = row < a.rows;
  const int64_t base = live ? row * a.n : 0;
  const T* w = static_cast<const T*>(a.weight) + (live ? (row % a.groups) * a.n : 0);
  const float rs = live ? a.rstd[row] : 0.f;
  const float dot = row_dot<T, VEC>(a, static_cast<const T*>(a.x) + base, static_cast<const T*>(a.dy) + base, w, rs,
                                    live, sub);
  if (!live) return;
  const float mean = dot / static_cast<float>(a.n);
  for (int c = sub * VEC; c < a.n; c += a.lanes * VEC) backward_vector<T, VEC, ADD, false>(a, base, c, w, rs, mean, nullptr, 0);
}

// Backward and weight gradient in one pass (one weight row, groups 1; vectorised rows). Block b
// owns rows [b chunk, (b + 1) chunk); its kThreads / lanes row groups take one row each per
// pass. Each row group adds its rows' dy * round(xhat) into its own row of shared memory (each
// element owned by one thread: no atomics); then the block adds the row groups' sums in group
// order into its partial row, and the final kernel adds the blocks' partials in block order:
// bitwise reproducible. The sums live in shared memory, not registers: in registers (80 a
// thread) they cost occupancy, 51 us per add-form call on small against 44 us (docs/PERF.md,
// 2026-12-03). A row group's sums are stored element-major, element k of vector v at
// k * (n / VEC) + v, so that the lanes of a warp, which hold consecutive vectors, meet distinct
// banks: column-major (v * VEC + k) put lanes VEC floats apart, an 8-way bank conflict on every
// add (ncu: 85% of the shared wavefronts were conflicts). NV > 0 takes each row through
// registers (backward_row_cached), NV 0 streams it.
template <typename T, int VEC, int NV, bool ADD>
__global__ void __launch_bounds__(kThreads, cached_min_blocks<NV>())
    backward_dw_kernel(const RowArgs a, const int64_t chunk, float* partial) {
  extern __shared__ float s_dw[];  // [kThreads / lanes][VEC][n / VEC]
  const int sub = threadIdx.x % a.lanes, group = threadIdx.x / a.lanes, groups_per_pass = kThreads / a.lanes;
  for (int i = threadIdx.x; i < groups_per_pass * a.n; i += kThreads) s_dw[i] = 0.f;
  __syncthreads();
  float* mine = s_dw + group * a.n;
  const T* w = static_cast<const T*>(a.weight);
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * chunk, end = min(a.rows, begin + chunk);
  for (int64_t first = begin; first < end; first += groups_per_pass) {  // uniform over the block
    const int64_t row = first + group;
    const bool live = row < end;
    if constexpr (NV > 0) {
      backward_row_cached<T, VEC, NV, ADD, true>(a, row, live, sub, mine);
      continue;
    }
    const int64_t base = live ? row * a.n : 0;
    const float rs = live ? a.rstd[row] : 0.f;
    const float dot = row_dot<T, VEC>(a, static_cast<const T*>(a.x) + base, static_cast<const T*>(a.dy) + base, w,
                                      rs, live, sub);
    if (!live) continue;
    const float mean = dot / static_cast<float>(a.n);
    for (int c = sub * VEC; c < a.n; c += a.lanes * VEC) {
      backward_vector<T, VEC, ADD, true>(a, base, c, w, rs, mean, mine + c / VEC, a.n / VEC);
    }
  }
  __syncthreads();
  const int vectors = a.n / VEC;
  for (int j = threadIdx.x; j < a.n; j += kThreads) {  // j: the element-major index (no conflicts)
    float sum = 0.f;
    for (int g = 0; g < groups_per_pass; ++g) sum += s_dw[g * a.n + j];
    partial[static_cast<int64_t>(blockIdx.x) * a.n + (j % vectors) * VEC + j / vectors] = sum;
  }
}

// ---------------------------------------------------------------------------------------------
// Weight gradient: the rows viewed as rows / groups super-rows of C = groups * n columns, so
// that column c always meets weight element c.
struct WeightGradPlan {
  int64_t super_rows = 0, chunk = 1;
  int columns = 0, col_threads = 1, row_threads = 1, col_blocks = 1, chunks = 1, vec = 1;
};

struct WeightGradArgs {
  WeightGradPlan plan;
  int n = 0, groups = 1;
  const void* x = nullptr;
  const float* rstd = nullptr;
  const void* dy = nullptr;
  float* partial = nullptr;  // [chunks, columns]
  void* dweight = nullptr;
};

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) weight_grad_partial_kernel(const WeightGradArgs a) {
  __shared__ float s_sum[kThreads * VEC];
  const WeightGradPlan& p = a.plan;
  const int ct = threadIdx.x % p.col_threads, rt = threadIdx.x / p.col_threads;
  const int c0 = (blockIdx.x * p.col_threads + ct) * VEC;
  const bool active = rt < p.row_threads && c0 < p.columns;
  float acc[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) acc[k] = 0.f;
  if (active) {
    const int64_t begin = blockIdx.y * p.chunk, end = min(p.super_rows, begin + p.chunk);
    const int segment = c0 / a.n;  // VEC > 1 only when n % VEC == 0: a vector never straddles rows
    for (int64_t r = begin + rt; r < end; r += p.row_threads) {
      float xv[VEC], gv[VEC];
      load<T, VEC>(static_cast<const T*>(a.x) + r * p.columns + c0, xv);
      load<T, VEC>(static_cast<const T*>(a.dy) + r * p.columns + c0, gv);
      const float rs = a.rstd[r * a.groups + segment];
#pragma unroll
      for (int k = 0; k < VEC; ++k) acc[k] += gv[k] * round_to<T>(xv[k] * rs);
    }
  }
#pragma unroll
  for (int k = 0; k < VEC; ++k) s_sum[threadIdx.x * VEC + k] = acc[k];
  __syncthreads();
  if (rt != 0 || c0 >= p.columns) return;
  for (int j = 1; j < p.row_threads; ++j) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc[k] += s_sum[(j * p.col_threads + ct) * VEC + k];
  }
  float* out = a.partial + static_cast<int64_t>(blockIdx.y) * p.columns + c0;
#pragma unroll
  for (int k = 0; k < VEC; ++k) out[k] = acc[k];
}

// The chunks' partial sums of 32 columns per block: warp w adds chunks w, w + 8, ... of its
// lane's column, then warp 0 adds the eight warps' sums in order (fixed order: deterministic).
// Eight warps share the up to 512 chunks, so no thread walks them all (one thread per column
// did, on a handful of blocks: about 10 us a call on small's 768 columns).
constexpr int kFinalWarps = kThreads / 32;

template <typename T>
__global__ void __launch_bounds__(kThreads) weight_grad_final_kernel(const WeightGradArgs a) {
  __shared__ float s_sum[kFinalWarps][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c = blockIdx.x * 32 + lane;
  float sum = 0.f;
  if (c < a.plan.columns) {
    for (int j = warp; j < a.plan.chunks; j += kFinalWarps) sum += a.partial[static_cast<int64_t>(j) * a.plan.columns + c];
  }
  s_sum[warp][lane] = sum;
  __syncthreads();
  if (warp != 0 || c >= a.plan.columns) return;
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kFinalWarps; ++w) total += s_sum[w][lane];
  static_cast<T*>(a.dweight)[c] = vector_io::from_float<T>(total);
}

// ---------------------------------------------------------------------------------------------
// Host side.
void check_shape(const RmsNormShape& s) {
  HYDRA_CHECK(s.rows >= 0 && s.n > 0 && s.groups > 0 && s.rows % s.groups == 0,
              "rms_norm kernels: rows " << s.rows << ", n " << s.n << ", groups " << s.groups);
}

template <typename T>
int row_vec(int n, std::initializer_list<const void*> pointers) {
  constexpr int kVec = vector_io::kMaxVec<T>;
  if (n % kVec != 0) return 1;
  for (const void* p : pointers) {
    if (!vector_io::aligned16(p)) return 1;
  }
  return kVec;
}

RowArgs row_args(const RmsNormShape& s, int vec) {
  RowArgs a;
  a.rows = s.rows;
  a.n = s.n;
  a.groups = s.groups;
  a.eps = s.eps;
  a.lanes = vector_io::lanes_for((s.n + vec - 1) / vec);
  return a;
}

unsigned row_blocks(const RowArgs& a) {
  const int64_t rows_per_block = kThreads / a.lanes;
  return static_cast<unsigned>((a.rows + rows_per_block - 1) / rows_per_block);
}

template <typename T, bool ADD>
void launch_forward(RowArgs a, int vec, cudaStream_t stream) {
  if (a.rows == 0) return;
  if (vec > 1) {
    forward_kernel<T, vector_io::kMaxVec<T>, ADD><<<row_blocks(a), kThreads, 0, stream>>>(a);
  } else {
    forward_kernel<T, 1, ADD><<<row_blocks(a), kThreads, 0, stream>>>(a);
  }
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

constexpr int64_t kTargetBlocks = 512;  // a few waves on ~132 SMs

// The separate weight-gradient pass's chunking (hence its workspace, [chunks, columns] float32,
// and the order of its sums) is a function of the shape alone: not of the device, nor of the
// vector width, which depends on the pointers' alignment.
WeightGradPlan weight_grad_plan(const RmsNormShape& s, int vec) {
  constexpr int64_t kColumnsPerBlock = 2048;  // kThreads x 8 bf16
  constexpr int64_t kMinRowsPerChunk = 8;
  WeightGradPlan p;
  p.vec = vec;
  p.columns = s.groups * s.n;
  p.super_rows = s.rows / s.groups;
  const int col_vectors = p.columns / vec;
  p.col_threads = std::min(kThreads, col_vectors);
  p.row_threads = kThreads / p.col_threads;
  p.col_blocks = (col_vectors + p.col_threads - 1) / p.col_threads;
  const int64_t want = std::max<int64_t>(1, kTargetBlocks / ((p.columns + kColumnsPerBlock - 1) / kColumnsPerBlock));
  const int64_t chunks = std::min(want, std::max<int64_t>(1, (p.super_rows + kMinRowsPerChunk - 1) / kMinRowsPerChunk));
  p.chunk = std::max<int64_t>(1, (p.super_rows + chunks - 1) / chunks);
  p.chunks = static_cast<int>(std::max<int64_t>(1, (p.super_rows + p.chunk - 1) / p.chunk));
  return p;
}

size_t weight_grad_workspace_floats(const WeightGradPlan& p) {
  return static_cast<size_t>(p.chunks) * static_cast<size_t>(p.columns);
}

// The last kernel of both weight-gradient paths: a.plan.chunks partial rows of a.plan.columns
// in a.partial, added in chunk order into a.dweight.
template <typename T>
void launch_chunk_sums(const WeightGradArgs& a, cudaStream_t stream) {
  weight_grad_final_kernel<T><<<static_cast<unsigned>((a.plan.columns + 31) / 32), kThreads, 0, stream>>>(a);
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

// The separate pass: partial sums per chunk of rows, then the chunks in order.
template <typename T>
void launch_weight_grad(const RmsNormShape& shape, const void* x, const float* rstd, const void* dy,
                        const RmsNormWeightGrad& out, cudaStream_t stream) {
  const int vec = row_vec<T>(shape.n, {x, dy});
  WeightGradArgs a;
  a.plan = weight_grad_plan(shape, vec);  // its workspace: checked by the caller
  a.n = shape.n;
  a.groups = shape.groups;
  a.x = x;
  a.rstd = rstd;
  a.dy = dy;
  a.partial = static_cast<float*>(out.workspace);
  a.dweight = out.dweight;
  const dim3 grid(a.plan.col_blocks, a.plan.chunks);
  if (vec > 1) {
    weight_grad_partial_kernel<T, vector_io::kMaxVec<T>><<<grid, kThreads, 0, stream>>>(a);
  } else {
    weight_grad_partial_kernel<T, 1><<<grid, kThreads, 0, stream>>>(a);
  }
  HYDRA_KERNEL_CHECK(cudaGetLastError());
  launch_chunk_sums<T>(a, stream);
}

// The backward with the weight gradient in the same pass applies to one weight row (groups 1)
// and rows in 16-byte vectors whose per-row-group sums fit kFusedMaxSmem of shared memory:
// n up to 3072 (bfloat16 and float32 alike: 8 row groups of 32 lanes).
constexpr size_t kFusedMaxSmem = 96 * 1024;
constexpr int64_t kFusedMaxBlocks = kTargetBlocks;

struct FusedPlan {
  bool applies = false;
  int64_t chunk = 0;  // rows per block, a multiple of the rows one pass covers
  unsigned blocks = 0;
  size_t smem = 0;
};

int cached_vectors(const RowArgs& a, int vec);

// Blocks of the fused pass. Rows held 8 vectors a lane (bf16 n 2048: 198 registers, one block a
// multiprocessor) take 128 blocks of 64 rows, one wave: at 512 blocks of 16 rows each block's
// fixed work (zeroing 64 KB of sums, adding its 8 rows of them, writing its partial row) weighed
// as much as its rows (1b's add-form backward with the weight gradient: 84.5 -> 70.0 us a call;
// at small's n 768 the same change was slower, 54.5 -> 72.7 us, its blocks fit four a
// multiprocessor). A function of the shape alone, as the sums' order must be.
int64_t fused_max_blocks(const RowArgs& a, int vec) { return cached_vectors(a, vec) == 8 ? 128 : kFusedMaxBlocks; }

FusedPlan fused_plan(const RmsNormShape& s, const RowArgs& a, int vec) {
  FusedPlan p;
  const int64_t per_pass = kThreads / a.lanes;
  p.smem = static_cast<size_t>(per_pass) * s.n * sizeof(float);
  if (s.groups != 1 || vec == 1 || s.rows == 0 || p.smem > kFusedMaxSmem) return p;
  p.applies = true;
  const int64_t passes = (s.rows + per_pass - 1) / per_pass;
  const int64_t blocks = std::min(fused_max_blocks(a, vec), passes);
  p.chunk = (passes + blocks - 1) / blocks * per_pass;
  p.blocks = static_cast<unsigned>((s.rows + p.chunk - 1) / p.chunk);
  return p;
}

// The vectors of a row one lane of the backward holds in registers (NV of backward_row_cached:
// 1, 2, 3, 4 or 8), or 0 where the row streams (rows not in 16-byte vectors, or longer rows).
int cached_vectors(const RowArgs& a, int vec) {
  if (vec == 1) return 0;
  const int per_lane = (a.n / vec + a.lanes - 1) / a.lanes;
  for (int nv : {1, 2, 3, 4, 8}) {
    if (per_lane <= nv) return nv;
  }
  return 0;
}

// pick(std::integral_constant<int, NV>{}) for the NV that cached_vectors chose (0: streaming).
template <typename Pick>
auto by_cached_vectors(int nv, const Pick& pick) {
  switch (nv) {
    case 1: return pick(std::integral_constant<int, 1>{});
    case 2: return pick(std::integral_constant<int, 2>{});
    case 3: return pick(std::integral_constant<int, 3>{});
    case 4: return pick(std::integral_constant<int, 4>{});
    case 8: return pick(std::integral_constant<int, 8>{});
    default: return pick(std::integral_constant<int, 0>{});
  }
}

template <typename T, bool ADD>
void launch_fused(const RowArgs& a, const FusedPlan& p, const RmsNormWeightGrad& out, cudaStream_t stream) {
  const auto kernel = by_cached_vectors(cached_vectors(a, vector_io::kMaxVec<T>), [](auto nv) {
    return backward_dw_kernel<T, vector_io::kMaxVec<T>, decltype(nv)::value, ADD>;
  });
  if (p.smem > 48 * 1024) {
    HYDRA_KERNEL_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(p.smem)));
  }
  kernel<<<p.blocks, kThreads, p.smem, stream>>>(a, p.chunk, static_cast<float*>(out.workspace));
  HYDRA_KERNEL_CHECK(cudaGetLastError());
  WeightGradArgs f;
  f.plan.columns = a.n;
  f.plan.chunks = static_cast<int>(p.blocks);
  f.partial = static_cast<float*>(out.workspace);
  f.dweight = out.dweight;
  launch_chunk_sums<T>(f, stream);
}

// dx (ADD: and the branch gradient) and, when asked, the weight gradient: in one pass where
// fused_plan allows, else the separate pass first (it reads dy, which dx may overwrite).
template <typename T, bool ADD>
void launch_backward(const RmsNormShape& shape, RowArgs a, int vec, const RmsNormWeightGrad& dweight,
                     cudaStream_t stream) {
  if (dweight.dweight != nullptr) {
    HYDRA_CHECK(dweight.workspace_bytes >= rms_norm_weight_grad_workspace(shape),
                "rms_norm weight gradient: workspace of " << dweight.workspace_bytes << " bytes is too small");
    const FusedPlan p = fused_plan(shape, a, vec);
    if (p.applies) return launch_fused<T, ADD>(a, p, dweight, stream);
    launch_weight_grad<T>(shape, a.x, a.rstd, a.dy, dweight, stream);
  }
  if (a.rows == 0) return;
  const int nv = cached_vectors(a, vec);
  if (nv > 0) {
    const auto kernel = by_cached_vectors(nv, [](auto n) {
      return backward_cached_kernel<T, vector_io::kMaxVec<T>, decltype(n)::value == 0 ? 1 : decltype(n)::value, ADD>;
    });
    kernel<<<row_blocks(a), kThreads, 0, stream>>>(a);
  } else if (vec > 1) {
    backward_kernel<T, vector_io::kMaxVec<T>, ADD><<<row_blocks(a), kThreads, 0, stream>>>(a);
  } else {
    backward_kernel<T, 1, ADD><<<row_blocks(a), kThreads, 0, stream>>>(a);
  }
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

}  // namespace

size_t rms_norm_weight_grad_workspace(const RmsNormShape& shape) {
  check_shape(shape);
  const size_t separate = weight_grad_workspace_floats(weight_grad_plan(shape, 1));
  const size_t fused = shape.groups == 1 ? static_cast<size_t>(std::min(shape.rows, kFusedMaxBlocks)) * shape.n : 0;
  return std::max(separate, fused) * sizeof(float);
}

void rms_norm_forward(const RmsNormShape& shape, const void* x, const void* weight, void* y, float* rstd,
                      cudaStream_t stream) {
  check_shape(shape);
  const bool bf = shape.dtype == StorageType::kBFloat16;
  const int vec = bf ? row_vec<bf16>(shape.n, {x, weight, y}) : row_vec<float>(shape.n, {x, weight, y});
  RowArgs a = row_args(shape, vec);
  a.x = x;
  a.weight = weight;
  a.out = y;
  a.rstd = rstd;
  if (bf) {
    launch_forward<bf16, false>(a, vec, stream);
  } else {
    launch_forward<float, false>(a, vec, stream);
  }
}

void add_rms_norm_forward(const RmsNormShape& shape, const void* x, const void* y, float alpha, const void* weight,
                          void* h, void* out, float* rstd, cudaStream_t stream) {
  check_shape(shape);
  const bool bf = shape.dtype == StorageType::kBFloat16;
  const int vec =
      bf ? row_vec<bf16>(shape.n, {x, y, weight, h, out}) : row_vec<float>(shape.n, {x, y, weight, h, out});
  RowArgs a = row_args(shape, vec);
  a.x = x;
  a.y = y;
  a.alpha = alpha;
  a.weight = weight;
  a.h = h;
  a.out = out;
  a.rstd = rstd;
  if (bf) {
    launch_forward<bf16, true>(a, vec, stream);
  } else {
    launch_forward<float, true>(a, vec, stream);
  }
}

void rms_norm_backward(const RmsNormShape& shape, const void* x, const void* weight, const float* rstd, const void* dy,
                       void* dx, const RmsNormWeightGrad& dweight, cudaStream_t stream) {
  check_shape(shape);
  const bool bf = shape.dtype == StorageType::kBFloat16;
  const int vec = bf ? row_vec<bf16>(shape.n, {x, weight, dy, dx}) : row_vec<float>(shape.n, {x, weight, dy, dx});
  RowArgs a = row_args(shape, vec);
  a.x = x;
  a.weight = weight;
  a.rstd = const_cast<float*>(rstd);  // read only in the backward
  a.dy = dy;
  a.out = dx;
  if (bf) {
    launch_backward<bf16, false>(shape, a, vec, dweight, stream);
  } else {
    launch_backward<float, false>(shape, a, vec, dweight, stream);
  }
}

void add_rms_norm_backward(const RmsNormShape& shape, const void* h, const void* weight, const float* rstd,
                           const void* dh, const void* dn, float alpha, void* dx, void* dy,
                           const RmsNormWeightGrad& dweight, cudaStream_t stream) {
  check_shape(shape);
  const bool bf = shape.dtype == StorageType::kBFloat16;
  const int vec = bf ? row_vec<bf16>(shape.n, {h, weight, dh, dn, dx, dy})
                     : row_vec<float>(shape.n, {h, weight, dh, dn, dx, dy});
  RowArgs a = row_args(shape, vec);
  a.x = h;
  a.weight = weight;
  a.rstd = const_cast<float*>(rstd);
  a.dy = dn;
  a.dh = dh;
  a.alpha = alpha;
  a.out = dx;
  a.h = dy;
  if (bf) {
    launch_backward<bf16, true>(shape, a, vec, dweight, stream);
  } else {
    launch_backward<float, true>(shape, a, vec, dweight, stream);
  }
}

}  // namespace hydra::kernels
