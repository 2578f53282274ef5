// One decode step of attention over preallocated slots (launchers in decode_attention.h).
//
// Design invariants
// - A block is (key range, key/value head, row): it holds the G = H / H_kv query heads of its
//   key/value head in shared memory (float32, scaled) and walks its range in chunks of 32 keys.
//   Each chunk's keys (and values) are first staged in shared memory by the whole block, 16-byte
//   loads with several in flight a thread: a decode step reads each slot once, so the time is
//   the latency of those loads, and a lane walking its own key row load after load (the first
//   version) waited for each one (21 us a launch at batch 1, 2026-12-05).
// - Then lane = key: each warp scores the chunk for heads w, w + 4, ... from the staged keys
//   (rows padded by 16 bytes so that the lanes' rows fall in different banks), updates those
//   heads' running max and sum (online softmax), and the block adds the chunk's p V into the
//   heads' float32 accumulators in shared memory (thread = head and 16 bytes of channels).
// - The put: slot count[b] belongs to exactly one block's range (or to none: then split 0 writes
//   it), and only that block reads it, after a __syncthreads that orders the write before the
//   read. No other block touches the slot, so there is no race between blocks.
// - Splitting: a row and key/value head is split over key ranges only when rows x key/value
//   heads would leave the GPU idle (about two blocks an SM wanted); each range writes its
//   (unnormalised output, max, sum) to the workspace and a second kernel combines them in range
//   order (deterministic).
// - Two step kernels. step_kernel (above; float32, or more than 16 heads a group) is measured:
//   H100, dense `small` at batch 1 (docs/PERF.md 2026-12-05), 7 us a launch for CCQA (G 4,
//   d 16), 10 us for MQA (G 12, d 64), 35 us for MLA (G 12, 416/384 channels), where the loads
//   are a few microseconds: the scores walk the key channels one lane per key with four warps
//   an SM, latency-bound. mma_step_kernel (bfloat16, G <= 16) does q K^T and P V on mma.sync
//   with the group's heads as the 16 rows of one m-tile, 64 keys a chunk, the tiles copied with
//   cp.async; NOT yet run on a GPU when written (session 22): the gpu test
//   DecodeAttentionGpu.FusedStepEqualsTheUnfusedOpsInFloat64 covers it (its bf16 cases but
//   the 32-head one).
#include "kernels/decode_attention.h"

#include <algorithm>
#include <cmath>

#include "kernels/latent_attention_common.cuh"
#include "kernels/vector_io.cuh"

namespace hydra::kernels {
namespace {

using vector_io::bf16;
using vector_io::load;
using vector_io::store;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 32;  // keys scored at once: one a lane
constexpr int kMaxGroup = 32;
constexpr int kHeadsPerWarp = kMaxGroup / kWarps;
constexpr int kMaxSplits = 64;
constexpr int kSizeMultiple = 8;  // key and value sizes: whole 16-byte vectors of bfloat16
constexpr int kInFlight = 4;      // 16-byte loads a thread issues before it uses the first
constexpr int kCombineInFlight = 8;  // ranges whose partial outputs a combining thread loads at once
constexpr int kPad = 8;           // elements after each staged row (bank spread)

// How the keys of a row are split over blocks.
struct Plan {
  int splits = 1;
  int keys_per_split = 0;  // a multiple of the step kernel's chunk
  bool mma = false;        // mma_step_kernel (else step_kernel)
};

int group_of(const DecodeAttentionShape& s) { return s.kv_heads > 0 ? s.heads / s.kv_heads : 0; }

int elem_bytes(StorageType t) { return t == StorageType::kBFloat16 ? 2 : 4; }

// Shared memory: float32 q [G][key_size], o [G][value_size], p [G][kChunk], max, sum and rescale
// [G] (rounded up to 16 bytes); then the staged keys [kChunk][key_size + kPad] and, unless the
// values live in the keys, values [kChunk][value_size + kPad] in the storage type.
struct SharedLayout {
  int q, o, p, stats, k_tile, v_tile;  // offsets in floats (stats: m, l, a)
  size_t bytes;
};

SharedLayout shared_layout(const DecodeAttentionShape& s) {
  const int G = group_of(s);
  SharedLayout l;
  l.q = 0;
  l.o = l.q + G * s.key_size;
  l.p = l.o + G * s.value_size;
  l.stats = l.p + G * kChunk;
  l.k_tile = l.stats + (3 * G + 3) / 4 * 4;
  const auto tile_floats = [&](int size) { return kChunk * (size + kPad) * elem_bytes(s.dtype) / 4; };
  l.v_tile = l.k_tile + tile_floats(s.key_size);
  l.bytes = sizeof(float) * static_cast<size_t>(l.v_tile + (s.values_in_keys ? 0 : tile_floats(s.value_size)));
  return l;
}

struct Params {
  DecodeAttentionShape s;
  DecodeAttentionTensors t;
  int group = 0;
  Plan plan;
  SharedLayout smem;
  float* partial = nullptr;  // [B, H_kv, splits, G * (value_size + 2)] when splits > 1
};

int device_attribute(cudaDeviceAttr attr) {
  int dev = 0, value = 0;
  HYDRA_KERNEL_CHECK(cudaGetDevice(&dev));
  HYDRA_KERNEL_CHECK(cudaDeviceGetAttribute(&value, attr, dev));
  return value;
}

// The tensor-core step (mma_step_kernel): bfloat16, at most 16 query heads a key/value head
// (one m-tile), sizes in whole 16-channel k-steps, and its shared memory within the device's.
constexpr int kMmaKeys = 64;  // keys a chunk: 16 a warp
constexpr int kMmaRows = 16;  // the group's query heads, padded to one m-tile
constexpr int kScorePitch = kMmaKeys + 4;   // floats a row of scores
constexpr int kProbPitch = kMmaKeys + kPad;  // bf16 a row of probabilities

// Bytes of shared memory: q [16][key_size + kPad], keys [64][key_size + kPad] and values
// [64][value_size + kPad] (none when they live in the keys) in bf16; scores [16][kScorePitch]
// float32; probabilities [16][kProbPitch] bf16; o [16][value_size] float32; max, sum, rescale [16].
struct MmaLayout {
  size_t q, k, v, scores, probs, o, stats, bytes;
};

__host__ __device__ MmaLayout mma_layout(const DecodeAttentionShape& s) {
  const size_t qk_row = 2 * static_cast<size_t>(s.key_size + kPad), v_row = 2 * static_cast<size_t>(s.value_size + kPad);
  MmaLayout l;
  l.q = 0;
  l.k = l.q + kMmaRows * qk_row;
  l.v = l.k + kMmaKeys * qk_row;
  l.scores = l.v + (s.values_in_keys ? 0 : kMmaKeys * v_row);
  l.probs = l.scores + sizeof(float) * kMmaRows * kScorePitch;
  l.o = l.probs + 2 * kMmaRows * kProbPitch;
  l.stats = l.o + sizeof(float) * kMmaRows * static_cast<size_t>(s.value_size);
  l.bytes = l.stats + sizeof(float) * 3 * kMmaRows;
  return l;
}

bool use_mma(const DecodeAttentionShape& s) {
  return s.dtype == StorageType::kBFloat16 && group_of(s) <= kMmaRows && s.key_size % 16 == 0 &&
         s.value_size % 16 == 0 &&
         mma_layout(s).bytes <= static_cast<size_t>(device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin));
}

Plan plan_for(const DecodeAttentionShape& s) {
  const bool mma = use_mma(s);
  const int chunk = mma ? kMmaKeys : kChunk;
  const int chunks = (s.span + chunk - 1) / chunk;
  const int blocks = std::max(1, s.rows * s.kv_heads);
  const int wanted = (2 * device_attribute(cudaDevAttrMultiProcessorCount) + blocks - 1) / blocks;
  const int splits = std::max(1, std::min({chunks, wanted, kMaxSplits}));
  Plan plan;
  plan.mma = mma;
  plan.keys_per_split = (chunks + splits - 1) / splits * chunk;
  plan.splits = (s.span + plan.keys_per_split - 1) / plan.keys_per_split;  // no range past the span
  return plan;
}

template <typename T>
__device__ __forceinline__ const T* token_at(const DecodeTokens& t, int b, int head) {
  return static_cast<const T*>(t.data) + b * t.row_stride + head * t.head_stride;
}

template <typename T, int VEC>
__device__ __forceinline__ void copy_channels(T* to, const T* from, int size) {
  for (int c = threadIdx.x * VEC; c < size; c += kThreads * VEC) {
    *reinterpret_cast<vector_io::Pack<T, VEC>*>(to + c) = vector_io::load_pack<T, VEC>(from + c);
  }
}

// rows x size elements (row r at from + r * from_step), as 16-byte vectors, kInFlight loads a
// thread issued before the first use: store(r, c, vector) puts each where it goes (the staged
// tiles keep it; the queries become scaled float32).
template <typename T, int VEC, typename Store>
__device__ __forceinline__ void gather_rows(const T* from, int64_t from_step, int rows, int size, Store store) {
  const int vecs = size / VEC, total = rows * vecs;
  for (int base = threadIdx.x; base < total; base += kThreads * kInFlight) {
    vector_io::Pack<T, VEC> buf[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int i = base + u * kThreads;
      if (i < total) buf[u] = vector_io::load_pack<T, VEC>(from + (i / vecs) * from_step + (i % vecs) * VEC);
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int i = base + u * kThreads;
      if (i < total) store(i / vecs, (i % vecs) * VEC, buf[u]);
    }
  }
}

// The end of a key chunk for one query row of the online softmax: the row's running max moves
// from m_old to m_new, its sum takes the chunk's `sum` (of exp(score - m_new)), and a_s keeps
// the factor its output accumulators are rescaled by. A row that has seen only hidden keys
// (m_new = -inf) keeps factor 1 and sum 0. Both step kernels end a chunk with it (lane 0).
__device__ __forceinline__ void update_row_state(float* m_s, float* l_s, float* a_s, int row, float m_old, float m_new,
                                                 float sum) {
  const float alpha = m_new == -INFINITY ? 1.f : expf(m_old - m_new);
  a_s[row] = alpha;
  l_s[row] = l_s[row] * alpha + sum;
  m_s[row] = m_new;
}

// What a block reads: its row's slots of its key/value head, its key range, and the end of the
// visible keys in it; and the put of the new token (step 1 of both step kernels).
template <typename T>
struct BlockSlots {
  T* k_row;
  T* v_row;  // k_row when the values live in the keys
  int64_t k_step, v_step;  // elements from one slot to the next
  int64_t count;
  int range_begin, end;  // the block's keys are range_begin .. end - 1 (none when end <= range_begin)
};

template <typename T>
__device__ __forceinline__ BlockSlots<T> block_slots(const Params& p, int split, int kvh, int b) {
  constexpr int VEC = vector_io::kMaxVec<T>;
  const DecodeAttentionShape& s = p.s;
  BlockSlots<T> r;
  r.k_step = static_cast<int64_t>(s.kv_heads) * s.key_size;
  r.k_row = static_cast<T*>(p.t.k_slots) + static_cast<int64_t>(b) * s.capacity * r.k_step +
            static_cast<int64_t>(kvh) * s.key_size;
  r.v_step = s.values_in_keys ? r.k_step : static_cast<int64_t>(s.kv_heads) * s.value_size;
  r.v_row = s.values_in_keys ? r.k_row
                             : static_cast<T*>(p.t.v_slots) + static_cast<int64_t>(b) * s.capacity * r.v_step +
                                   static_cast<int64_t>(kvh) * s.value_size;
  r.count = p.t.count[b];
  r.range_begin = split * p.plan.keys_per_split;
  const int range_end = r.range_begin + p.plan.keys_per_split;
  r.end = static_cast<int>(min(min(static_cast<int64_t>(s.span), r.count + 1), static_cast<int64_t>(range_end)));
  // The new token into slot count, by the one block whose range holds it (split 0 when none).
  const int64_t ranges_end = static_cast<int64_t>(p.plan.splits) * p.plan.keys_per_split;
  const bool puts = r.count < s.capacity && ((r.count >= r.range_begin && r.count < range_end) ||
                                             (split == 0 && r.count >= ranges_end));
  if (puts) {
    copy_channels<T, VEC>(r.k_row + r.count * r.k_step, token_at<T>(p.t.k_new, b, kvh), s.key_size);
    if (!s.values_in_keys) {
      copy_channels<T, VEC>(r.v_row + r.count * r.v_step, token_at<T>(p.t.v_new, b, kvh), s.value_size);
    }
  }
  return r;
}

// The block's result: the group's outputs o [G][dv] / l where one range covers the keys, else its
// share (o unnormalised, max, sum) for combine_kernel.
template <typename T>
__device__ __forceinline__ void finish_block(const Params& p, int split, int kvh, int b, const float* o_s,
                                             const float* m_s, const float* l_s) {
  constexpr int VEC = vector_io::kMaxVec<T>;
  const int G = p.group, dv = p.s.value_size, vecs = dv / VEC;
  if (p.plan.splits == 1) {
    T* out = static_cast<T*>(p.t.out) + (static_cast<int64_t>(b) * p.s.heads + static_cast<int64_t>(kvh) * G) * dv;
    for (int item = threadIdx.x; item < G * vecs; item += kThreads) {
      const int g = item / vecs, c = (item % vecs) * VEC;
      const float inv = l_s[g] > 0.f ? 1.f / l_s[g] : 0.f;
      float o[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) o[v] = o_s[g * dv + c + v] * inv;
      store<T, VEC>(out + g * dv + c, o);
    }
    return;
  }
  float* part = p.partial + ((static_cast<int64_t>(b) * p.s.kv_heads + kvh) * p.plan.splits + split) * G * (dv + 2);
  for (int i = threadIdx.x; i < G * dv; i += kThreads) part[i] = o_s[i];
  for (int g = threadIdx.x; g < G; g += kThreads) part[G * dv + g] = m_s[g], part[G * dv + G + g] = l_s[g];
}

template <typename T>
__global__ void __launch_bounds__(kThreads) step_kernel(const Params p) {
  constexpr int VEC = vector_io::kMaxVec<T>;
  using Pack = vector_io::Pack<T, VEC>;
  extern __shared__ float smem[];
  const DecodeAttentionShape& s = p.s;
  const int G = p.group, dk = s.key_size, dv = s.value_size;
  float* q_s = smem + p.smem.q;
  float* o_s = smem + p.smem.o;
  float* p_s = smem + p.smem.p;
  float* m_s = smem + p.smem.stats;
  float* l_s = m_s + G;
  float* a_s = l_s + G;
  T* k_tile = reinterpret_cast<T*>(smem + p.smem.k_tile);
  const int k_pitch = dk + kPad;
  T* v_tile = s.values_in_keys ? k_tile : reinterpret_cast<T*>(smem + p.smem.v_tile);
  const int v_pitch = s.values_in_keys ? k_pitch : dv + kPad;
  const int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // 1. The put; the block's slots.
  const BlockSlots<T> slots = block_slots<T>(p, split, kvh, b);
  const T* k_row = slots.k_row;
  const T* v_row = slots.v_row;
  const int64_t k_step = slots.k_step, v_step = slots.v_step;
  // The group's queries, scaled, as float32 (head g of the group is query head kvh G + g).
  gather_rows<T, VEC>(token_at<T>(p.t.q, b, kvh * G), p.t.q.head_stride, G, dk, [&](int g, int c, const Pack& v) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) q_s[g * dk + c + e] = vector_io::to_float(v.v[e]) * s.scale;
  });
  for (int i = threadIdx.x; i < G * dv; i += kThreads) o_s[i] = 0.f;
  for (int g = threadIdx.x; g < G; g += kThreads) m_s[g] = -INFINITY, l_s[g] = 0.f;
  __syncthreads();  // also orders the put before the reads of the slot

  const int end = slots.end;
  const int vecs = dv / VEC;
  for (int j0 = slots.range_begin; j0 < end; j0 += kChunk) {
    const int keys = min(kChunk, end - j0);
    // 2. The chunk's keys and values into shared memory.
    const auto stage = [&](T* tile, int pitch) {
      return [=](int r, int c, const Pack& v) { *reinterpret_cast<Pack*>(tile + r * pitch + c) = v; };
    };
    gather_rows<T, VEC>(k_row + j0 * k_step, k_step, keys, dk, stage(k_tile, k_pitch));
    if (!s.values_in_keys) gather_rows<T, VEC>(v_row + j0 * v_step, v_step, keys, dv, stage(v_tile, v_pitch));
    __syncthreads();
    // 3. Scores: lane = key, warp w = heads w, w + kWarps, ...
    const bool visible = lane < keys;
    float acc[kHeadsPerWarp];
#pragma unroll
    for (int i = 0; i < kHeadsPerWarp; ++i) acc[i] = 0.f;
    if (visible) {
      const T* key = k_tile + lane * k_pitch;
      for (int c = 0; c < dk; c += VEC) {
        float kv[VEC];
        load<T, VEC>(key + c, kv);
#pragma unroll
        for (int i = 0; i < kHeadsPerWarp; ++i) {
          const int g = warp + i * kWarps;
          if (g < G) {
            const float* qg = q_s + g * dk + c;
#pragma unroll
            for (int v = 0; v < VEC; ++v) acc[i] = fmaf(qg[v], kv[v], acc[i]);
          }
        }
      }
    }
    // 4. The running max and sum of each head (warp w: heads w, w + kWarps, ...; lane = key);
    // p_s becomes the chunk's exp(score - max), a_s the factor the accumulators are rescaled by.
#pragma unroll
    for (int i = 0; i < kHeadsPerWarp; ++i) {
      const int g = warp + i * kWarps;
      if (g >= G) break;
      const float score = visible ? acc[i] : -INFINITY;
      float chunk_max = score;
      for (int off = 16; off > 0; off /= 2) chunk_max = fmaxf(chunk_max, __shfl_xor_sync(0xffffffffu, chunk_max, off));
      const float m_old = m_s[g], m_new = fmaxf(m_old, chunk_max);
      const float e = m_new == -INFINITY ? 0.f : expf(score - m_new);
      const float sum = vector_io::group_sum(e, 32);
      p_s[g * kChunk + lane] = e;
      if (lane == 0) update_row_state(m_s, l_s, a_s, g, m_old, m_new, sum);
    }
    __syncthreads();
    // 5. o = alpha o + p V over the chunk: thread = (head, VEC channels).
    for (int item = threadIdx.x; item < G * vecs; item += kThreads) {
      const int g = item / vecs, c = (item % vecs) * VEC;
      float* og = o_s + g * dv + c;
      const float alpha = a_s[g];
      float o[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) o[v] = og[v] * alpha;
      for (int kk = 0; kk < keys; ++kk) {
        const float pk = p_s[g * kChunk + kk];
        float val[VEC];
        load<T, VEC>(v_tile + kk * v_pitch + c, val);
#pragma unroll
        for (int v = 0; v < VEC; ++v) o[v] = fmaf(pk, val[v], o[v]);
      }
#pragma unroll
      for (int v = 0; v < VEC; ++v) og[v] = o[v];
    }
    __syncthreads();  // before the next chunk overwrites the tiles and p_s
  }

  finish_block<T>(p, split, kvh, b, o_s, m_s, l_s);
}

// ldmatrix addresses for a runtime row pitch (latent_attention_common.cuh's a_frag, b_pair and
// bt_pair take a compile-time one): the same lanes-to-rows mapping.
__device__ __forceinline__ void a_frag(uint32_t (&r)[4], const bf16* m, int pitch, int row0, int col0, int lane) {
  detail::ldsm_x4(r, m + (row0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * pitch + col0 + (lane >> 4) * 8);
}
__device__ __forceinline__ void b_pair(uint32_t (&r)[4], const bf16* m, int pitch, int row0, int col0, int lane) {
  detail::ldsm_x4(r, m + (row0 + (lane >> 4) * 8 + (lane & 7)) * pitch + col0 + ((lane >> 3) & 1) * 8);
}
__device__ __forceinline__ void bt_pair(uint32_t (&r)[4], const bf16* m, int pitch, int row0, int col0, int lane) {
  detail::ldsm_x4_t(r, m + (row0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * pitch + col0 + (lane >> 4) * 8);
}

// rows x size bf16 (row r at from + r * from_step) into a tile of `pitch`, asynchronously; rows
// from `valid` on are zero-filled (a masked key's value must be 0, not stale bits: p = 0 times
// NaN would be NaN).
__device__ __forceinline__ void stage_rows_async(bf16* tile, int pitch, const bf16* from, int64_t from_step, int rows,
                                                 int valid, int size) {
  const int vecs = size / 8;
  for (int i = threadIdx.x; i < rows * vecs; i += kThreads) {
    const int r = i / vecs, c = (i % vecs) * 8;
    detail::cp_async16(tile + r * pitch + c, r < valid ? from + r * from_step + c : from, r < valid);
  }
}

// The step on tensor cores (bfloat16, G <= 16): the group's heads are the 16 rows of one m-tile
// (rows past G zero). A chunk is 64 keys: warp w scores keys 16 w .. 16 w + 15 over every
// k-step of the key size (m16n8k16), the scores go through shared memory to the online softmax
// (warp w: rows 4 w .. 4 w + 3), and P (rounded to bf16, as flash attention does) times the
// chunk's values is accumulated into o in shared memory, warp w taking value columns
// 16 (w + 4 i) .. + 15.
__global__ void __launch_bounds__(kThreads) mma_step_kernel(const Params p) {
  extern __shared__ __align__(16) unsigned char raw[];
  const DecodeAttentionShape& s = p.s;
  const int G = p.group, dk = s.key_size, dv = s.value_size;
  const MmaLayout L = mma_layout(s);
  bf16* q_s = reinterpret_cast<bf16*>(raw + L.q);
  bf16* k_s = reinterpret_cast<bf16*>(raw + L.k);
  bf16* v_s = s.values_in_keys ? k_s : reinterpret_cast<bf16*>(raw + L.v);
  float* scores = reinterpret_cast<float*>(raw + L.scores);
  bf16* probs = reinterpret_cast<bf16*>(raw + L.probs);
  float* o_s = reinterpret_cast<float*>(raw + L.o);
  float* m_s = reinterpret_cast<float*>(raw + L.stats);
  float* l_s = m_s + kMmaRows;
  float* a_s = l_s + kMmaRows;
  const int qk_pitch = dk + kPad, v_pitch = s.values_in_keys ? qk_pitch : dv + kPad;
  const int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g4 = lane / 4, t4 = lane % 4;

  // 1. The put; the block's slots. The fence makes the put visible to the asynchronous copies
  // below, which read through L2.
  const BlockSlots<bf16> slots = block_slots<bf16>(p, split, kvh, b);
  __threadfence();
  // The group's queries (rows past G zero), unscaled: the scale applies to the float32 scores.
  const bf16* q0 = token_at<bf16>(p.t.q, b, kvh * G);
  stage_rows_async(q_s, qk_pitch, q0, p.t.q.head_stride, kMmaRows, G, dk);
  detail::cp_async_commit();
  for (int i = threadIdx.x; i < kMmaRows * dv; i += kThreads) o_s[i] = 0.f;
  for (int r = threadIdx.x; r < kMmaRows; r += kThreads) m_s[r] = -INFINITY, l_s[r] = 0.f;

  for (int j0 = slots.range_begin; j0 < slots.end; j0 += kMmaKeys) {
    const int keys = min(kMmaKeys, slots.end - j0);
    // 2. The chunk's keys and values into shared memory.
    __syncthreads();  // the put, and the previous chunk's reads of the tiles, come first
    stage_rows_async(k_s, qk_pitch, slots.k_row + j0 * slots.k_step, slots.k_step, kMmaKeys, keys, dk);
    if (!s.values_in_keys) {
      stage_rows_async(v_s, v_pitch, slots.v_row + j0 * slots.v_step, slots.v_step, kMmaKeys, keys, dv);
    }
    detail::cp_async_commit();
    detail::cp_async_wait_all();
    __syncthreads();
    // 3. Scores of keys 16 w .. 16 w + 15 for the 16 rows.
    float acc[2][4] = {};
    for (int kc = 0; kc < dk / 16; ++kc) {
      uint32_t qa[4], kb[4];
      a_frag(qa, q_s, qk_pitch, 0, kc * 16, lane);
      b_pair(kb, k_s, qk_pitch, warp * 16, kc * 16, lane);
      detail::mma(acc[0], qa, kb[0], kb[1]);
      detail::mma(acc[1], qa, kb[2], kb[3]);
    }
#pragma unroll
    for (int nb = 0; nb < 2; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = g4 + (e / 2) * 8, key = warp * 16 + nb * 8 + 2 * t4 + (e % 2);
        scores[row * kScorePitch + key] = key < keys ? acc[nb][e] * s.scale : -INFINITY;
      }
    }
    __syncthreads();
    // 4. Online softmax, warp w: rows 4 w .. 4 w + 3, lane: keys lane and lane + 32.
    for (int row = warp * 4; row < warp * 4 + 4; ++row) {
      const float s0 = scores[row * kScorePitch + lane], s1 = scores[row * kScorePitch + lane + 32];
      float chunk_max = fmaxf(s0, s1);
      for (int off = 16; off > 0; off /= 2) chunk_max = fmaxf(chunk_max, __shfl_xor_sync(0xffffffffu, chunk_max, off));
      const float m_old = m_s[row], m_new = fmaxf(m_old, chunk_max);
      const float e0 = m_new == -INFINITY ? 0.f : expf(s0 - m_new), e1 = m_new == -INFINITY ? 0.f : expf(s1 - m_new);
      const float sum = vector_io::group_sum(e0 + e1, 32);
      probs[row * kProbPitch + lane] = __float2bfloat16_rn(e0);
      probs[row * kProbPitch + lane + 32] = __float2bfloat16_rn(e1);
      if (lane == 0) update_row_state(m_s, l_s, a_s, row, m_old, m_new, sum);
    }
    __syncthreads();
    // 5. o = alpha o + P V: warp w takes value columns 16 np .. 16 np + 15, np = w, w + 4, ...
    uint32_t pa[kMmaKeys / 16][4];
#pragma unroll
    for (int kk = 0; kk < kMmaKeys / 16; ++kk) a_frag(pa[kk], probs, kProbPitch, 0, kk * 16, lane);
    const float alpha_lo = a_s[g4], alpha_hi = a_s[g4 + 8];
    for (int np = warp; np < dv / 16; np += kWarps) {
      float o[2][4];
#pragma unroll
      for (int nb = 0; nb < 2; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = g4 + (e / 2) * 8, col = np * 16 + nb * 8 + 2 * t4 + (e % 2);
          o[nb][e] = o_s[row * dv + col] * (e < 2 ? alpha_lo : alpha_hi);
        }
      }
#pragma unroll
      for (int kk = 0; kk < kMmaKeys / 16; ++kk) {
        uint32_t vb[4];
        bt_pair(vb, v_s, v_pitch, kk * 16, np * 16, lane);
        detail::mma(o[0], pa[kk], vb[0], vb[1]);
        detail::mma(o[1], pa[kk], vb[2], vb[3]);
      }
#pragma unroll
      for (int nb = 0; nb < 2; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = g4 + (e / 2) * 8, col = np * 16 + nb * 8 + 2 * t4 + (e % 2);
          o_s[row * dv + col] = o[nb][e];
        }
      }
    }
  }
  detail::cp_async_wait_all();  // the queries' copies, when the block had no key to read
  __syncthreads();
  // 6. Rows 0 .. G - 1 are the group's outputs.
  finish_block<bf16>(p, split, kvh, b, o_s, m_s, l_s);
}

// The ranges of one (row, key/value head) into its output, in range order: blockIdx.z takes
// kThreads of the group's G x dv / VEC output vectors, one a thread (one block for them all
// walked the ranges of MLA's 12 x 48 vectors four loads at a time, ~15 us a launch at batch 1,
// as long as the step itself). Every load that a sum needs is issued before the sum uses it
// (the ranges' maxima and sums gathered into shared memory by the whole block, which each
// block of the row repeats; the outputs kCombineInFlight ranges at a time).
template <typename T>
__global__ void __launch_bounds__(kThreads) combine_kernel(const Params p) {
  constexpr int VEC = vector_io::kMaxVec<T>;
  __shared__ float max_s[kMaxSplits * kMaxGroup], weight_s[kMaxSplits * kMaxGroup];
  const DecodeAttentionShape& s = p.s;
  const int G = p.group, dv = s.value_size, splits = p.plan.splits;
  const int kvh = blockIdx.x, b = blockIdx.y;
  const int64_t stride = static_cast<int64_t>(G) * (dv + 2);
  const float* base = p.partial + (static_cast<int64_t>(b) * s.kv_heads + kvh) * splits * stride;
  for (int i = threadIdx.x; i < splits * G; i += kThreads) {
    const int r = i / G, g = i % G;
    max_s[i] = base[r * stride + G * dv + g];
    weight_s[i] = base[r * stride + G * dv + G + g];  // the range's sum, until it becomes its weight
  }
  __syncthreads();
  for (int g = threadIdx.x; g < G; g += kThreads) {
    float M = -INFINITY;
    for (int r = 0; r < splits; ++r) M = fmaxf(M, max_s[r * G + g]);
    float L = 0.f;
    for (int r = 0; r < splits; ++r) {
      const float m = max_s[r * G + g];
      const float w = m == -INFINITY ? 0.f : expf(m - M);
      L += w * weight_s[r * G + g];
      weight_s[r * G + g] = w;
    }
    const float inv = L > 0.f ? 1.f / L : 0.f;
    for (int r = 0; r < splits; ++r) weight_s[r * G + g] *= inv;
  }
  __syncthreads();
  T* out = static_cast<T*>(p.t.out) + (static_cast<int64_t>(b) * s.heads + static_cast<int64_t>(kvh) * G) * dv;
  const int vecs = dv / VEC;
  const int item = blockIdx.z * kThreads + threadIdx.x;
  if (item >= G * vecs) return;
  const int g = item / vecs, c = (item % vecs) * VEC;
  float o[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) o[v] = 0.f;
  for (int r0 = 0; r0 < splits; r0 += kCombineInFlight) {
    float part[kCombineInFlight][VEC];
#pragma unroll
    for (int u = 0; u < kCombineInFlight; ++u) {
#pragma unroll
      for (int v = 0; v < VEC; ++v) part[u][v] = r0 + u < splits ? base[(r0 + u) * stride + g * dv + c + v] : 0.f;
    }
#pragma unroll
    for (int u = 0; u < kCombineInFlight; ++u) {
      const float w = r0 + u < splits ? weight_s[(r0 + u) * G + g] : 0.f;
#pragma unroll
      for (int v = 0; v < VEC; ++v) o[v] = fmaf(w, part[u][v], o[v]);
    }
  }
  store<T, VEC>(out + g * dv + c, o);
}

bool vectors_aligned(const DecodeTokens& t, int elem) {
  return vector_io::aligned16(t.data) && (t.row_stride * elem) % 16 == 0 && (t.head_stride * elem) % 16 == 0;
}

// The ranges' shares (combine_kernel's input) under `plan`; none with one range.
size_t workspace_bytes_for(const DecodeAttentionShape& s, const Plan& plan) {
  if (plan.splits == 1) return 0;
  return sizeof(float) * static_cast<size_t>(s.rows) * s.kv_heads * plan.splits * group_of(s) * (s.value_size + 2);
}

template <typename T>
void launch(const Params& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.plan.splits), static_cast<unsigned>(p.s.kv_heads), static_cast<unsigned>(p.s.rows));
  const auto run = [&](auto kernel, size_t smem) {
    if (smem > 48 * 1024) {
      HYDRA_KERNEL_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    }
    kernel<<<grid, kThreads, smem, stream>>>(p);
  };
  if (p.plan.mma) {
    run(mma_step_kernel, mma_layout(p.s).bytes);
  } else {
    run(step_kernel<T>, p.smem.bytes);
  }
  HYDRA_KERNEL_CHECK(cudaGetLastError());
  if (p.plan.splits > 1) {
    const int vectors = p.group * (p.s.value_size / vector_io::kMaxVec<T>);
    const dim3 combine_grid(static_cast<unsigned>(p.s.kv_heads), static_cast<unsigned>(p.s.rows),
                            static_cast<unsigned>((vectors + kThreads - 1) / kThreads));
    combine_kernel<T><<<combine_grid, kThreads, 0, stream>>>(p);
    HYDRA_KERNEL_CHECK(cudaGetLastError());
  }
}

}  // namespace

bool decode_attention_supported(const DecodeAttentionShape& s, const DecodeAttentionTensors& t) {
  const int G = group_of(s);
  const int elem = elem_bytes(s.dtype);
  const bool sizes = s.rows >= 1 && s.kv_heads >= 1 && s.heads % s.kv_heads == 0 && G <= kMaxGroup &&
                     s.key_size > 0 && s.value_size > 0 && s.key_size % kSizeMultiple == 0 &&
                     s.value_size % kSizeMultiple == 0 && (!s.values_in_keys || s.value_size <= s.key_size) &&
                     s.span >= 1 && s.span <= s.capacity;
  if (!sizes) return false;
  const bool aligned = vectors_aligned(t.q, elem) && vectors_aligned(t.k_new, elem) &&
                       (s.values_in_keys || vectors_aligned(t.v_new, elem)) && vector_io::aligned16(t.k_slots) &&
                       vector_io::aligned16(t.v_slots) && vector_io::aligned16(t.out);
  return aligned && shared_layout(s).bytes <= static_cast<size_t>(device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin));
}

size_t decode_attention_workspace_bytes(const DecodeAttentionShape& s) { return workspace_bytes_for(s, plan_for(s)); }

void decode_attention(const DecodeAttentionShape& s, const DecodeAttentionTensors& t, void* workspace,
                      size_t workspace_bytes, cudaStream_t stream) {
  HYDRA_CHECK(decode_attention_supported(s, t), "decode_attention: unsupported shape (" << s.heads << " heads over "
                                                    << s.kv_heads << ", sizes " << s.key_size << "/" << s.value_size
                                                    << ") or unaligned tensors");
  Params p;
  p.s = s;
  p.t = t;
  p.group = group_of(s);
  p.plan = plan_for(s);
  p.smem = shared_layout(s);
  const size_t needed = workspace_bytes_for(s, p.plan);
  HYDRA_CHECK(workspace_bytes >= needed,
              "decode_attention: workspace of " << workspace_bytes << " bytes, " << needed << " needed");
  p.partial = static_cast<float*>(workspace);
  if (s.dtype == StorageType::kBFloat16) {
    launch<bf16>(p, stream);
  } else {
    launch<float>(p, stream);
  }
}

}  // namespace hydra::kernels
