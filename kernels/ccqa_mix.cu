// CCQA's qk-mean, post-mix norm, key temperature and RoPE after the convolutions, forward and
// backward (definitions in ccqa_mix.h).
//
// Design
// - A warp per (token, KV group): the group is the smallest unit closed under the qk-mean (its
//   key head reads the mean of its query heads' q0, and their gradients meet in dk0). Lane l
//   holds the RoPE pairs (f, f + d_h/2) for f = l + 32 p, p < d_h / 64, so a head's sums of
//   squares are one warp reduction and each rotation stays in the lane.
// - The token's RoPE angles are computed once (float64, then rounded) and serve every head.
// - The backward recomputes the forward from q0, k0, qc, kc (nothing is saved). Parameter
//   gradients: each lane sums over its warp's tokens, the warps of a block meet in shared
//   memory in warp order, a block writes its row of the workspace, and one block per output
//   sums the rows in a fixed order: bitwise reproducible, no atomics.
#include "kernels/ccqa_mix.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/vector_io.cuh"

namespace hydra::kernels {
namespace {

using vector_io::bf16;
using vector_io::from_float;
using vector_io::to_float;

constexpr int kWarps = 8, kThreads = kWarps * 32;
constexpr int kMaxHalf = 64;

struct MixArgs {
  int64_t tokens;
  int H, Hkv, G;
  float gamma, eps;
  double inv_freq[kMaxHalf];  // theta^(-2f/d_h)
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// A lane's share of one head's row: a[p] = element l + 32 p, b[p] = its RoPE partner + d_h/2.
template <int PAIRS>
struct Row {
  float a[PAIRS], b[PAIRS];
};

template <int PAIRS, typename T>
__device__ __forceinline__ Row<PAIRS> load_row(const T* row) {
  constexpr int HALF = 32 * PAIRS;
  const int lane = threadIdx.x % 32;
  Row<PAIRS> r;
#pragma unroll
  for (int p = 0; p < PAIRS; ++p) {
    r.a[p] = to_float(row[lane + 32 * p]);
    r.b[p] = to_float(row[lane + 32 * p + HALF]);
  }
  return r;
}

template <int PAIRS, typename T>
__device__ __forceinline__ void store_row(T* row, const Row<PAIRS>& r) {
  constexpr int HALF = 32 * PAIRS;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int p = 0; p < PAIRS; ++p) {
    row[lane + 32 * p] = from_float<T>(r.a[p]);
    row[lane + 32 * p + HALF] = from_float<T>(r.b[p]);
  }
}

// x + alpha y, elementwise.
template <int PAIRS>
__device__ __forceinline__ Row<PAIRS> axpy(const Row<PAIRS>& x, float alpha, const Row<PAIRS>& y) {
  Row<PAIRS> r;
#pragma unroll
  for (int p = 0; p < PAIRS; ++p) {
    r.a[p] = x.a[p] + alpha * y.a[p];
    r.b[p] = x.b[p] + alpha * y.b[p];
  }
  return r;
}

// The angles of one token, cos and sin per pair.
template <int PAIRS>
struct Angles {
  float cs[PAIRS], sn[PAIRS];
};
template <int PAIRS>
__device__ __forceinline__ Angles<PAIRS> angles_of(const MixArgs& a, int64_t position) {
  const int lane = threadIdx.x % 32;
  Angles<PAIRS> r;
#pragma unroll
  for (int p = 0; p < PAIRS; ++p) {
    double s = 0.0, c = 1.0;
    sincos(static_cast<double>(position) * a.inv_freq[lane + 32 * p], &s, &c);
    r.cs[p] = static_cast<float>(c);
    r.sn[p] = static_cast<float>(s);
  }
  return r;
}

template <int PAIRS>
__device__ __forceinline__ float rstd_of(const Row<PAIRS>& x, float eps) {
  float ss = 0.f;
#pragma unroll
  for (int p = 0; p < PAIRS; ++p) ss += x.a[p] * x.a[p] + x.b[p] * x.b[p];
  return rsqrtf(warp_sum(ss) / (64 * PAIRS) + eps);
}

// rope(rms(pre) * w * scale).
template <int PAIRS>
__device__ __forceinline__ Row<PAIRS> norm_rope(const Row<PAIRS>& pre, const Row<PAIRS>& w, float scale, float eps,
                                                const Angles<PAIRS>& ang) {
  const float rs = rstd_of(pre, eps) * scale;
  Row<PAIRS> out;
#pragma unroll
  for (int p = 0; p < PAIRS; ++p) {
    const float x1 = pre.a[p] * rs * w.a[p], x2 = pre.b[p] * rs * w.b[p];
    out.a[p] = x1 * ang.cs[p] - x2 * ang.sn[p];
    out.b[p] = x2 * ang.cs[p] + x1 * ang.sn[p];
  }
  return out;
}

// The gradient of pre from the output's gradient g (norm_rope backward); dw += the weight's
// gradient, *dtau (when given) += the scale's log-gradient (d out / d tau = out for scale e^tau).
template <int PAIRS>
__device__ __forceinline__ Row<PAIRS> norm_rope_backward(const Row<PAIRS>& pre, const Row<PAIRS>& g,
                                                         const Row<PAIRS>& w, float scale, float eps,
                                                         const Angles<PAIRS>& ang, Row<PAIRS>& dw, float* dtau) {
  constexpr int DH = 64 * PAIRS;
  const float rs = rstd_of(pre, eps);
  Row<PAIRS> n, gn;
  float dot = 0.f, tau_part = 0.f;
#pragma unroll
  for (int p = 0; p < PAIRS; ++p) {
    n.a[p] = pre.a[p] * rs;
    n.b[p] = pre.b[p] * rs;
    // RoPE is a rotation: its transpose rotates back.
    const float gx1 = g.a[p] * ang.cs[p] + g.b[p] * ang.sn[p], gx2 = g.b[p] * ang.cs[p] - g.a[p] * ang.sn[p];
    gn.a[p] = gx1 * w.a[p] * scale;
    gn.b[p] = gx2 * w.b[p] * scale;
    dot += gn.a[p] * n.a[p] + gn.b[p] * n.b[p];
    dw.a[p] += gx1 * n.a[p] * scale;
    dw.b[p] += gx2 * n.b[p] * scale;
    tau_part += (gx1 * n.a[p] * w.a[p] + gx2 * n.b[p] * w.b[p]) * scale;
  }
  if (dtau) *dtau += tau_part;
  const float mean = warp_sum(dot) / DH;
  Row<PAIRS> d;
#pragma unroll
  for (int p = 0; p < PAIRS; ++p) {
    d.a[p] = rs * (gn.a[p] - n.a[p] * mean);
    d.b[p] = rs * (gn.b[p] - n.b[p] * mean);
  }
  return d;
}

template <int PAIRS, typename P>
__device__ __forceinline__ Row<PAIRS> load_weights(const void* w) {
  return load_row<PAIRS>(static_cast<const P*>(w));
}

// pre_h = qc_h + gamma (q0_h + k0) / 2 of query head `head` at token tok; q0r gets q0_h.
template <int PAIRS, typename T>
__device__ __forceinline__ Row<PAIRS> query_pre(const T* q0, const T* qc, const CcqaMixInputs& in, int64_t tok,
                                                int head, float half_gamma, const Row<PAIRS>& k0r, Row<PAIRS>& q0r) {
  constexpr int DH = 64 * PAIRS;
  q0r = load_row<PAIRS>(q0 + tok * in.q0_stride + head * DH);
  return axpy(load_row<PAIRS>(qc + tok * in.qc_stride + head * DH), half_gamma, axpy(q0r, 1.f, k0r));
}

template <typename T, typename P, int PAIRS>
__global__ void __launch_bounds__(kThreads) mix_forward_kernel(const MixArgs a, const CcqaMixInputs in, T* q, T* k) {
  constexpr int DH = 64 * PAIRS;
  const int warp = threadIdx.x / 32, j = blockIdx.y;
  const T* q0 = static_cast<const T*>(in.q0);
  const T* k0 = static_cast<const T*>(in.k0);
  const T* qc = static_cast<const T*>(in.qc);
  const T* kc = static_cast<const T*>(in.kc);
  const Row<PAIRS> wq = load_weights<PAIRS, P>(in.q_norm_w), wk = load_weights<PAIRS, P>(in.k_norm_w);
  const float scale_k = expf(to_float(static_cast<const P*>(in.tau)[j]));
  const float half_gamma = 0.5f * a.gamma;
  for (int64_t tok = static_cast<int64_t>(blockIdx.x) * kWarps + warp; tok < a.tokens;
       tok += static_cast<int64_t>(gridDim.x) * kWarps) {
    const Angles<PAIRS> ang = angles_of<PAIRS>(a, in.positions[tok]);
    const Row<PAIRS> k0r = load_row<PAIRS>(k0 + tok * in.k0_stride + j * DH);
    Row<PAIRS> qsum{};
    for (int h = 0; h < a.G; ++h) {
      const int head = j * a.G + h;
      Row<PAIRS> q0r;
      const Row<PAIRS> pre = query_pre<PAIRS>(q0, qc, in, tok, head, half_gamma, k0r, q0r);
      qsum = axpy(qsum, 1.f, q0r);
      store_row(q + (tok * a.H + head) * DH, norm_rope(pre, wq, 1.f, a.eps, ang));
    }
    const Row<PAIRS> mean_term = axpy(k0r, 1.f / a.G, qsum);  // k0 + mean of the group's q0
    const Row<PAIRS> pre_k = axpy(load_row<PAIRS>(kc + tok * in.kc_stride + j * DH), half_gamma, mean_term);
    store_row(k + (tok * a.Hkv + j) * DH, norm_rope(pre_k, wk, scale_k, a.eps, ang));
  }
}

template <typename T, typename P, int PAIRS>
__global__ void __launch_bounds__(kThreads) mix_backward_kernel(const MixArgs a, const CcqaMixInputs in, const T* dq,
                                                                const T* dk, CcqaMixGrads out, float* ws) {
  constexpr int DH = 64 * PAIRS, PER = 2 * DH + 1;
  __shared__ float s_part[kWarps][PER];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, j = blockIdx.y;
  const T* q0 = static_cast<const T*>(in.q0);
  const T* k0 = static_cast<const T*>(in.k0);
  const T* qc = static_cast<const T*>(in.qc);
  const T* kc = static_cast<const T*>(in.kc);
  T* dq0 = static_cast<T*>(out.dq0);
  T* dk0 = static_cast<T*>(out.dk0);
  T* dqc = static_cast<T*>(out.dqc);
  T* dkc = static_cast<T*>(out.dkc);
  const Row<PAIRS> wq = load_weights<PAIRS, P>(in.q_norm_w), wk = load_weights<PAIRS, P>(in.k_norm_w);
  const float scale_k = expf(to_float(static_cast<const P*>(in.tau)[j]));
  const float half_gamma = 0.5f * a.gamma;
  Row<PAIRS> dqn{}, dkn{};
  float dtau = 0.f;
  for (int64_t tok = static_cast<int64_t>(blockIdx.x) * kWarps + warp; tok < a.tokens;
       tok += static_cast<int64_t>(gridDim.x) * kWarps) {
    const Angles<PAIRS> ang = angles_of<PAIRS>(a, in.positions[tok]);
    const Row<PAIRS> k0r = load_row<PAIRS>(k0 + tok * in.k0_stride + j * DH);
    // The key head first: its pre-norm gradient feeds every query head's dq0.
    Row<PAIRS> qsum{};
    for (int h = 0; h < a.G; ++h) qsum = axpy(qsum, 1.f, load_row<PAIRS>(q0 + tok * in.q0_stride + (j * a.G + h) * DH));
    const Row<PAIRS> pre_k =
        axpy(load_row<PAIRS>(kc + tok * in.kc_stride + j * DH), half_gamma, axpy(k0r, 1.f / a.G, qsum));
    const Row<PAIRS> d_k = norm_rope_backward(pre_k, load_row<PAIRS>(dk + (tok * a.Hkv + j) * DH), wk, scale_k, a.eps,
                                              ang, dkn, &dtau);
    store_row(dkc + (tok * a.Hkv + j) * DH, d_k);
    Row<PAIRS> dsum{};
    for (int h = 0; h < a.G; ++h) {
      const int head = j * a.G + h;
      Row<PAIRS> q0r;
      const Row<PAIRS> pre = query_pre<PAIRS>(q0, qc, in, tok, head, half_gamma, k0r, q0r);
      const Row<PAIRS> d_q =
          norm_rope_backward(pre, load_row<PAIRS>(dq + (tok * a.H + head) * DH), wq, 1.f, a.eps, ang, dqn, nullptr);
      store_row(dqc + (tok * a.H + head) * DH, d_q);
      Row<PAIRS> d0 = axpy(d_q, 1.f / a.G, d_k);  // pre_h reads q0_h; pre_k reads the mean
#pragma unroll
      for (int p = 0; p < PAIRS; ++p) {
        d0.a[p] *= half_gamma;
        d0.b[p] *= half_gamma;
      }
      store_row(dq0 + (tok * a.H + head) * DH, d0);
      dsum = axpy(dsum, 1.f, d_q);
    }
    Row<PAIRS> dk0r = axpy(d_k, 1.f, dsum);  // pre_k and every pre_h read k0
#pragma unroll
    for (int p = 0; p < PAIRS; ++p) {
      dk0r.a[p] *= half_gamma;
      dk0r.b[p] *= half_gamma;
    }
    store_row(dk0 + (tok * a.Hkv + j) * DH, dk0r);
  }
  // This block's parameter partials: the warps in order.
#pragma unroll
  for (int p = 0; p < PAIRS; ++p) {
    s_part[warp][lane + 32 * p] = dqn.a[p];
    s_part[warp][lane + 32 * p + DH / 2] = dqn.b[p];
    s_part[warp][DH + lane + 32 * p] = dkn.a[p];
    s_part[warp][DH + lane + 32 * p + DH / 2] = dkn.b[p];
  }
  dtau = warp_sum(dtau);
  if (lane == 0) s_part[warp][2 * DH] = dtau;
  __syncthreads();
  for (int e = threadIdx.x; e < PER; e += kThreads) {
    float acc = 0.f;
    for (int w = 0; w < kWarps; ++w) acc += s_part[w][e];
    ws[(static_cast<int64_t>(blockIdx.x) * a.Hkv + j) * PER + e] = acc;
  }
}

// One block per output: the norm weights sum every (block, group) row, tau_j the rows of group
// j; each thread's strided share in order, then a fixed tree.
template <typename P>
__global__ void __launch_bounds__(kThreads) reduce_kernel(const float* ws, int blocks, int Hkv, int DH,
                                                          CcqaMixGrads out) {
  __shared__ float s[kThreads];
  const int o = blockIdx.x, per = 2 * DH + 1;
  float acc = 0.f;
  if (o < 2 * DH) {
    for (int i = threadIdx.x; i < blocks * Hkv; i += kThreads) acc += ws[static_cast<int64_t>(i) * per + o];
  } else {
    const int g = o - 2 * DH;
    for (int b = threadIdx.x; b < blocks; b += kThreads) acc += ws[(static_cast<int64_t>(b) * Hkv + g) * per + 2 * DH];
  }
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  const P v = from_float<P>(s[0]);
  if (o < DH) static_cast<P*>(out.q_norm_w)[o] = v;
  else if (o < 2 * DH) static_cast<P*>(out.k_norm_w)[o - DH] = v;
  else static_cast<P*>(out.tau)[o - 2 * DH] = v;
}

MixArgs make_args(const CcqaMixShape& s) {
  MixArgs a{};
  a.tokens = s.batch * s.seq;
  a.H = s.heads;
  a.Hkv = s.kv_heads;
  a.G = s.heads / s.kv_heads;
  a.gamma = s.qk_gain;
  a.eps = s.eps;
  for (int f = 0; f < s.head_dim / 2; ++f) a.inv_freq[f] = std::pow(s.rope_theta, -2.0 * f / s.head_dim);
  return a;
}

// f(PAIRS, TypeTag<T>, TypeTag<P>) for the shape's head size (64 PAIRS) and storage types.
template <typename F>
void dispatch(const CcqaMixShape& s, F&& f) {
  vector_io::with_storage_types(s.dtype, s.param_dtype, [&](auto t, auto p) {
    if (s.head_dim == 64) return f(std::integral_constant<int, 1>{}, t, p);
    if (s.head_dim == 128) return f(std::integral_constant<int, 2>{}, t, p);
    HYDRA_FAIL(common::RuntimeFailure, "ccqa mix: head size " << s.head_dim);
  });
}

int warps_blocks(int64_t tokens) {
  return static_cast<int>(std::min<int64_t>((tokens + kWarps - 1) / kWarps, 1 << 20));
}

// Backward blocks a KV group: about four a multiprocessor in all, no more than the tokens need.
int backward_blocks(const CcqaMixShape& s) {
  int dev = 0, sms = 0;
  HYDRA_KERNEL_CHECK(cudaGetDevice(&dev));
  HYDRA_KERNEL_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const int64_t want = std::max<int64_t>(1, (4LL * sms + s.kv_heads - 1) / s.kv_heads);
  return static_cast<int>(std::min<int64_t>(want, warps_blocks(s.batch * s.seq)));
}

}  // namespace

bool ccqa_mix_supported(const CcqaMixShape& s) {
  return s.batch > 0 && s.seq > 0 && s.kv_heads > 0 && s.heads > 0 && s.heads % s.kv_heads == 0 &&
         s.kv_heads <= 65535 && (s.head_dim == 64 || s.head_dim == 128);
}

void ccqa_mix_forward(const CcqaMixShape& s, const CcqaMixInputs& in, void* q, void* k, cudaStream_t stream) {
  HYDRA_CHECK(ccqa_mix_supported(s), "ccqa mix: unsupported shape");
  const MixArgs a = make_args(s);
  const dim3 grid(warps_blocks(a.tokens), s.kv_heads);
  dispatch(s, [&](auto pairs, auto t, auto p) {
    using T = typename decltype(t)::type;
    using P = typename decltype(p)::type;
    mix_forward_kernel<T, P, decltype(pairs)::value><<<grid, kThreads, 0, stream>>>(a, in, static_cast<T*>(q),
                                                                                   static_cast<T*>(k));
    HYDRA_KERNEL_CHECK(cudaGetLastError());
  });
}

size_t ccqa_mix_backward_workspace(const CcqaMixShape& s) {
  HYDRA_CHECK(ccqa_mix_supported(s), "ccqa mix: unsupported shape");
  return static_cast<size_t>(backward_blocks(s)) * s.kv_heads * (2 * s.head_dim + 1) * sizeof(float);
}

void ccqa_mix_backward(const CcqaMixShape& s, const CcqaMixInputs& in, const void* dq, const void* dk,
                       const CcqaMixGrads& grads, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  HYDRA_CHECK(ccqa_mix_supported(s), "ccqa mix: unsupported shape");
  HYDRA_CHECK(workspace_bytes >= ccqa_mix_backward_workspace(s),
              "ccqa mix: workspace of " << workspace_bytes << " bytes, need " << ccqa_mix_backward_workspace(s));
  const MixArgs a = make_args(s);
  const int blocks = backward_blocks(s);
  dispatch(s, [&](auto pairs, auto t, auto p) {
    using T = typename decltype(t)::type;
    using P = typename decltype(p)::type;
    mix_backward_kernel<T, P, decltype(pairs)::value><<<dim3(blocks, s.kv_heads), kThreads, 0, stream>>>(
        a, in, static_cast<const T*>(dq), static_cast<const T*>(dk), grads, static_cast<float*>(workspace));
    HYDRA_KERNEL_CHECK(cudaGetLastError());
    reduce_kernel<P><<<2 * s.head_dim + s.kv_heads, kThreads, 0, stream>>>(static_cast<const float*>(workspace), blocks,
                                                                           s.kv_heads, s.head_dim, grads);
    HYDRA_KERNEL_CHECK(cudaGetLastError());
  });
}

}  // namespace hydra::kernels
