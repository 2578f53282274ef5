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
// - What limits it (H100, dense `small` at batch 1, docs/PERF.md 2026-12-05): 7 us a launch for
//   CCQA (G 4, d 16), 10 us for MQA (G 12, d 64), 35 us for MLA (G 12, 416/384 channels), 8-10
//   us a combine, where the loads are a few microseconds: the scores walk the key channels one
//   lane per key with four warps an SM, latency-bound. q K^T and P V on mma.sync (the group's
//   heads padded to 16 rows) is the next step.
#include "kernels/decode_attention.h"

#include <algorithm>
#include <cmath>

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
constexpr int kPad = 8;           // elements after each staged row (bank spread)

// How the keys of a row are split over blocks.
struct Plan {
  int splits = 1;
  int keys_per_split = 0;  // a multiple of kChunk
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

Plan plan_for(const DecodeAttentionShape& s) {
  const int chunks = (s.span + kChunk - 1) / kChunk;
  const int blocks = std::max(1, s.rows * s.kv_heads);
  const int wanted = (2 * device_attribute(cudaDevAttrMultiProcessorCount) + blocks - 1) / blocks;
  const int splits = std::max(1, std::min({chunks, wanted, kMaxSplits}));
  Plan plan;
  plan.keys_per_split = (chunks + splits - 1) / splits * kChunk;
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
  const int64_t count = p.t.count[b];
  const int range_begin = split * p.plan.keys_per_split, range_end = range_begin + p.plan.keys_per_split;

  const int64_t k_step = static_cast<int64_t>(s.kv_heads) * dk;  // elements from one slot to the next
  T* k_row = static_cast<T*>(p.t.k_slots) + static_cast<int64_t>(b) * s.capacity * k_step + static_cast<int64_t>(kvh) * dk;
  const int64_t v_step = s.values_in_keys ? k_step : static_cast<int64_t>(s.kv_heads) * dv;
  T* v_row = s.values_in_keys ? k_row
                              : static_cast<T*>(p.t.v_slots) + static_cast<int64_t>(b) * s.capacity * v_step +
                                    static_cast<int64_t>(kvh) * dv;

  // 1. The new token into slot count, by the one block whose range holds it (split 0 when none).
  const int64_t ranges_end = static_cast<int64_t>(p.plan.splits) * p.plan.keys_per_split;
  const bool puts = count < s.capacity &&
                    ((count >= range_begin && count < range_end) || (split == 0 && count >= ranges_end));
  if (puts) {
    copy_channels<T, VEC>(k_row + count * k_step, token_at<T>(p.t.k_new, b, kvh), dk);
    if (!s.values_in_keys) copy_channels<T, VEC>(v_row + count * v_step, token_at<T>(p.t.v_new, b, kvh), dv);
  }
  // The group's queries, scaled, as float32 (head g of the group is query head kvh G + g).
  gather_rows<T, VEC>(token_at<T>(p.t.q, b, kvh * G), p.t.q.head_stride, G, dk, [&](int g, int c, const Pack& v) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) q_s[g * dk + c + e] = vector_io::to_float(v.v[e]) * s.scale;
  });
  for (int i = threadIdx.x; i < G * dv; i += kThreads) o_s[i] = 0.f;
  for (int g = threadIdx.x; g < G; g += kThreads) m_s[g] = -INFINITY, l_s[g] = 0.f;
  __syncthreads();  // also orders the put before the reads of the slot

  const int end = static_cast<int>(min(min(static_cast<int64_t>(s.span), count + 1), static_cast<int64_t>(range_end)));
  const int vecs = dv / VEC;
  for (int j0 = range_begin; j0 < end; j0 += kChunk) {
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
      if (lane == 0) {
        const float alpha = m_new == -INFINITY ? 1.f : expf(m_old - m_new);
        a_s[g] = alpha;
        l_s[g] = l_s[g] * alpha + sum;
        m_s[g] = m_new;
      }
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

  // 6. One range: the output. Several: the range's share for combine_kernel.
  if (p.plan.splits == 1) {
    T* out = static_cast<T*>(p.t.out) + (static_cast<int64_t>(b) * s.heads + static_cast<int64_t>(kvh) * G) * dv;
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
  float* part = p.partial + ((static_cast<int64_t>(b) * s.kv_heads + kvh) * p.plan.splits + split) * G * (dv + 2);
  for (int i = threadIdx.x; i < G * dv; i += kThreads) part[i] = o_s[i];
  for (int g = threadIdx.x; g < G; g += kThreads) part[G * dv + g] = m_s[g], part[G * dv + G + g] = l_s[g];
}

// The ranges of one (row, key/value head) into its output, in range order. Every load that a
// sum needs is issued before the sum uses it (the ranges' maxima and sums gathered into shared
// memory by the whole block; the outputs kInFlight ranges at a time).
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
  for (int item = threadIdx.x; item < G * vecs; item += kThreads) {
    const int g = item / vecs, c = (item % vecs) * VEC;
    float o[VEC];
#pragma unroll
    for (int v = 0; v < VEC; ++v) o[v] = 0.f;
    for (int r0 = 0; r0 < splits; r0 += kInFlight) {
      float part[kInFlight][VEC];
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
#pragma unroll
        for (int v = 0; v < VEC; ++v) part[u][v] = r0 + u < splits ? base[(r0 + u) * stride + g * dv + c + v] : 0.f;
      }
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const float w = r0 + u < splits ? weight_s[(r0 + u) * G + g] : 0.f;
#pragma unroll
        for (int v = 0; v < VEC; ++v) o[v] = fmaf(w, part[u][v], o[v]);
      }
    }
    store<T, VEC>(out + g * dv + c, o);
  }
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
  const size_t smem = p.smem.bytes;
  if (smem > 48 * 1024) {
    HYDRA_KERNEL_CHECK(cudaFuncSetAttribute(step_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  const dim3 grid(static_cast<unsigned>(p.plan.splits), static_cast<unsigned>(p.s.kv_heads), static_cast<unsigned>(p.s.rows));
  step_kernel<T><<<grid, kThreads, smem, stream>>>(p);
  HYDRA_KERNEL_CHECK(cudaGetLastError());
  if (p.plan.splits > 1) {
    combine_kernel<T><<<dim3(static_cast<unsigned>(p.s.kv_heads), static_cast<unsigned>(p.s.rows)), kThreads, 0, stream>>>(p);
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
