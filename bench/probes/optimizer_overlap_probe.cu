// A probe, not part of the build: can the optimizer step run under the next step's forward?
//
// AdamW reads and writes 28 bytes a parameter and does almost no arithmetic: on `1b` (1.46B
// parameters) it is about a tenth of the training step, all of it waiting on HBM, while the
// forward that follows is mostly tensor-core matrix products that leave HBM partly idle. If a
// few SMs ran the update (layer by layer, ahead of the forward that reads each layer's weights)
// while cuBLAS kept its products off those SMs (cublasSetSmCountTarget), the update would cost
// the products a few percent of their SMs instead of its whole time. This probe measures the
// premise on a workload shaped like `1b` dense's forward at batch 8 x 1024 (24 layers: the
// q/k/v, output, gate+up and down products and a SwiGLU-like and a residual-like row kernel a
// layer, then the LM head; bf16, fp32 accumulation) and an AdamW-like pass over 1.46B
// parameters (bf16 gradient and weight, fp32 master and moments). It prints:
//   - the forward alone with cuBLAS targeting all SMs and SMs - c,
//   - the update alone on all SMs and on c SMs (one block of 1024 threads an SM),
//   - both at once on two streams, the products targeting SMs - c,
// for several c, and the time saved against the two run one after the other. Timing only:
// the update works on its own buffers, so no result depends on the order.
//
// Result (H100, 2026-12-07, docs/PERF.md session 35): no. An SM moves at most about 65 GB/s of
// the update's bytes (1 or 2 groups in flight a thread alike: 0.53 TB/s on 8 SMs, 1.02 on 16),
// so finishing 41 GB under a 32 ms forward takes 24 or more SMs, and the forward slows by what
// they would have computed (31.9 -> 36.9 ms on 108 SMs) and by the bytes both move at once.
// The best pair, 24 SMs without a target, saved 2.7 ms of 46.1 (forward then update); the
// step of `1b` is 143 ms, so the overlap would buy about 2%: not built.
//
//   nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -o /tmp/optimizer_overlap_probe \
//        bench/probes/optimizer_overlap_probe.cu -lcublas
//   /tmp/optimizer_overlap_probe
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "probe_check.cuh"

#define CHECK_BLAS(x)                                                    \
  do {                                                                   \
    const cublasStatus_t st = (x);                                       \
    if (st != CUBLAS_STATUS_SUCCESS) {                                   \
      std::printf("cuBLAS error %d at %s:%d\n", st, __FILE__, __LINE__); \
      std::exit(2);                                                      \
    }                                                                    \
  } while (0)

namespace {

// `1b` dense at batch 8 x 1024 (configs/1b.yaml: E 2048, 16 heads / 4 KV heads of 128, MLP 3.5).
constexpr int kTokens = 8192;
constexpr int kDim = 2048;
constexpr int kQkv = 2048 + 2 * 512;
constexpr int kHidden = 7168;
constexpr int kVocab = 50304;  // 50257 rounded up to a multiple of 64, as a padded head would be
constexpr int kLayers = 24;
constexpr int64_t kParams = 1464413342;

struct SiluTimes {  // the forward's SwiGLU: h = silu(a) * b
  __device__ float operator()(float a, float b) const { return a / (1.f + __expf(-a)) * b; }
};
struct Plus {  // the residual add beside the norm
  __device__ float operator()(float a, float b) const { return a + b; }
};

// out = op(a, b) over n bf16 elements, 8 a thread: two reads and one write, as the forward's
// row kernels move (one thread a vector and as many blocks as that takes, so tails balance).
template <typename Op>
__global__ void pairwise(int64_t n8, const uint4* a, const uint4* b, uint4* out) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= n8) return;
  uint4 va = a[i], vb = b[i], vo;
  const __nv_bfloat162* pa = reinterpret_cast<const __nv_bfloat162*>(&va);
  const __nv_bfloat162* pb = reinterpret_cast<const __nv_bfloat162*>(&vb);
  __nv_bfloat162* po = reinterpret_cast<__nv_bfloat162*>(&vo);
  for (int k = 0; k < 4; ++k) {
    const float2 fa = __bfloat1622float2(pa[k]), fb = __bfloat1622float2(pb[k]);
    po[k] = __floats2bfloat162_rn(Op{}(fa.x, fb.x), Op{}(fa.y, fb.y));
  }
  out[i] = vo;
}

struct Adam {
  int64_t n4 = 0;          // groups of 4 parameters
  const uint2* grad = nullptr;  // 4 bf16
  uint2* weight = nullptr;      // 4 bf16
  float4* master = nullptr;
  float4* m = nullptr;
  float4* v = nullptr;
};

__device__ float adam_one(float g, float& p, float& m, float& v) {
  m = 0.9f * m + 0.1f * g;
  v = 0.95f * v + 0.05f * g * g;
  p = p * (1.f - 1e-5f) - 1e-4f * m / (sqrtf(v) + 1e-8f);
  return p;
}

// The update of kernels/optimizer_update.cu in its byte pattern: 28 bytes a parameter. Each
// thread loads kUnroll groups before it computes any: on a few SMs the pass is bound by the bytes
// each SM has in flight (one group a thread: about 65 GB/s an SM on an H100), not by HBM.
template <int kUnroll>
__global__ void __launch_bounds__(1024) adamw_like(Adam a) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i0 = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i0 < a.n4; i0 += stride * kUnroll) {
    uint2 gv[kUnroll];
    float4 p[kUnroll], m[kUnroll], v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = i0 + u * stride;
      if (i < a.n4) {
        gv[u] = a.grad[i];
        p[u] = a.master[i];
        m[u] = a.m[i];
        v[u] = a.v[i];
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = i0 + u * stride;
      if (i >= a.n4) continue;
      const __nv_bfloat162* g = reinterpret_cast<const __nv_bfloat162*>(&gv[u]);
      const float2 g01 = __bfloat1622float2(g[0]), g23 = __bfloat1622float2(g[1]);
      uint2 wv;
      __nv_bfloat162* w = reinterpret_cast<__nv_bfloat162*>(&wv);
      w[0] = __floats2bfloat162_rn(adam_one(g01.x, p[u].x, m[u].x, v[u].x), adam_one(g01.y, p[u].y, m[u].y, v[u].y));
      w[1] = __floats2bfloat162_rn(adam_one(g23.x, p[u].z, m[u].z, v[u].z), adam_one(g23.y, p[u].w, m[u].w, v[u].w));
      a.master[i] = p[u];
      a.m[i] = m[u];
      a.v[i] = v[u];
      a.weight[i] = wv;
    }
  }
}

template <typename T>
T* alloc(size_t count, int fill = 0) {
  T* p = nullptr;
  CHECK(cudaMalloc(&p, count * sizeof(T)));
  CHECK(cudaMemset(p, fill, count * sizeof(T)));
  return p;
}

struct Forward {
  cublasHandle_t blas{};
  __nv_bfloat16 *x, *w_qkv, *w_o, *w_up, *w_down, *w_head, *qkv, *attn, *up, *h, *y, *logits;

  // D[m, n] = W[k, m]^T X[k, n] (column-major): m output features, n tokens, k input features.
  void product(const __nv_bfloat16* w, const __nv_bfloat16* x, __nv_bfloat16* d, int m, int n, int k) {
    const float one = 1.f, zero = 0.f;
    CHECK_BLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, w, CUDA_R_16BF, k, x, CUDA_R_16BF, k,
                            &zero, d, CUDA_R_16BF, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  void rows(int64_t elements, void (*kernel)(int64_t, const uint4*, const uint4*, uint4*), const void* a, const void* b,
            void* out, cudaStream_t s) {
    const int64_t vectors = elements / 8;
    kernel<<<static_cast<unsigned>((vectors + 255) / 256), 256, 0, s>>>(
        vectors, static_cast<const uint4*>(a), static_cast<const uint4*>(b), static_cast<uint4*>(out));
    CHECK(cudaGetLastError());
  }
  void run(cudaStream_t s, int sm_target) {
    CHECK_BLAS(cublasSetStream(blas, s));
    CHECK_BLAS(cublasSetSmCountTarget(blas, sm_target));
    for (int l = 0; l < kLayers; ++l) {
      product(w_qkv, x, qkv, kQkv, kTokens, kDim);
      product(w_o, attn, y, kDim, kTokens, kDim);  // attention itself left out: SDPA is not the question
      rows(int64_t{kTokens} * kDim, pairwise<Plus>, x, y, x, s);
      product(w_up, x, up, 2 * kHidden, kTokens, kDim);
      rows(int64_t{kTokens} * kHidden, pairwise<SiluTimes>, up, up + int64_t{kTokens} * kHidden, h, s);
      product(w_down, h, y, kDim, kTokens, kHidden);
      rows(int64_t{kTokens} * kDim, pairwise<Plus>, x, y, x, s);
    }
    product(w_head, x, logits, kVocab, kTokens, kDim);
    CHECK_BLAS(cublasSetSmCountTarget(blas, 0));
  }
};

struct Timer {
  cudaEvent_t start, stop, side_done;
  Timer() {
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreate(&stop));
    CHECK(cudaEventCreate(&side_done));
  }
};

// Best of `repeats` of `work` on `main` (which may fork onto `side` and join back), in ms.
template <typename F>
float best_ms(Timer& t, cudaStream_t main, int repeats, F work) {
  float best = 1e30f;
  for (int r = 0; r < repeats; ++r) {
    CHECK(cudaEventRecord(t.start, main));
    work();
    CHECK(cudaEventRecord(t.stop, main));
    CHECK(cudaEventSynchronize(t.stop));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, t.start, t.stop));
    best = std::min(best, ms);
  }
  return best;
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;
  std::printf("device %s, %d SMs\n", prop.name, sms);

  Forward f;
  CHECK_BLAS(cublasCreate(&f.blas));
  const size_t w_big = size_t{kDim} * 2 * kHidden;
  f.x = alloc<__nv_bfloat16>(size_t{kTokens} * kDim);
  f.w_qkv = alloc<__nv_bfloat16>(size_t{kDim} * kQkv);
  f.w_o = alloc<__nv_bfloat16>(size_t{kDim} * kDim);
  f.w_up = alloc<__nv_bfloat16>(w_big);
  f.w_down = alloc<__nv_bfloat16>(size_t{kHidden} * kDim);
  f.w_head = alloc<__nv_bfloat16>(size_t{kDim} * kVocab);
  f.qkv = alloc<__nv_bfloat16>(size_t{kTokens} * kQkv);
  f.attn = alloc<__nv_bfloat16>(size_t{kTokens} * kDim);
  f.up = alloc<__nv_bfloat16>(size_t{kTokens} * 2 * kHidden);
  f.h = alloc<__nv_bfloat16>(size_t{kTokens} * kHidden);
  f.y = alloc<__nv_bfloat16>(size_t{kTokens} * kDim);
  f.logits = alloc<__nv_bfloat16>(size_t{kTokens} * kVocab);

  Adam a;
  a.n4 = kParams / 4;
  a.grad = alloc<uint2>(a.n4);
  a.weight = alloc<uint2>(a.n4);
  a.master = alloc<float4>(a.n4);
  a.m = alloc<float4>(a.n4);
  a.v = alloc<float4>(a.n4);
  const double adam_bytes = 28.0 * kParams;

  // The forward on the stream of higher priority: where both have blocks waiting, its go first.
  int lowest = 0, highest = 0;
  CHECK(cudaDeviceGetStreamPriorityRange(&lowest, &highest));
  cudaStream_t main_stream, side;
  CHECK(cudaStreamCreateWithPriority(&main_stream, cudaStreamNonBlocking, highest));
  CHECK(cudaStreamCreateWithPriority(&side, cudaStreamNonBlocking, lowest));
  Timer t;
  auto update = [&](cudaStream_t s, int blocks, int unroll) {
    if (unroll == 2) {
      adamw_like<2><<<blocks, 1024, 0, s>>>(a);
    } else {
      adamw_like<1><<<blocks, 1024, 0, s>>>(a);
    }
    CHECK(cudaGetLastError());
  };

  f.run(main_stream, 0);  // warm-up: cuBLAS picks and loads its kernels
  update(main_stream, 2 * sms, 1);
  update(main_stream, 2 * sms, 2);
  CHECK(cudaStreamSynchronize(main_stream));

  const int repeats = 3;
  const float forward_all = best_ms(t, main_stream, repeats, [&] { f.run(main_stream, 0); });
  const float update_all = best_ms(t, main_stream, repeats, [&] { update(main_stream, 2 * sms, 1); });
  const float update_all2 = best_ms(t, main_stream, repeats, [&] { update(main_stream, 2 * sms, 2); });
  const float serial = forward_all + std::min(update_all, update_all2);
  std::printf("forward alone, all SMs: %.2f ms\n", forward_all);
  std::printf("update alone, all SMs: %.2f ms (%.2f TB/s); 2 groups a thread: %.2f ms (%.2f TB/s)\n", update_all,
              adam_bytes / update_all / 1e9, update_all2, adam_bytes / update_all2 / 1e9);
  std::printf("one after the other: %.2f ms\n\n", serial);
  std::printf("%4s %7s %13s %12s %8s %18s %19s %9s\n", "c", "unroll", "fwd SMs-c ms", "update c ms", "TB/s",
              "both, target c ms", "both, no target ms", "saved ms");
  for (int unroll : {1, 2}) {
    for (int c : {8, 12, 16, 24, 32}) {
      const float forward_c = best_ms(t, main_stream, repeats, [&] { f.run(main_stream, sms - c); });
      const float update_c = best_ms(t, main_stream, repeats, [&] { update(main_stream, c, unroll); });
      auto both = [&](int target) {
        return best_ms(t, main_stream, repeats, [&] {
          CHECK(cudaEventRecord(t.start, main_stream));
          CHECK(cudaStreamWaitEvent(side, t.start));
          update(side, c, unroll);
          f.run(main_stream, target);
          CHECK(cudaEventRecord(t.side_done, side));
          CHECK(cudaStreamWaitEvent(main_stream, t.side_done));
        });
      };
      const float both_target = both(sms - c);
      const float both_free = both(0);
      std::printf("%4d %7d %13.2f %12.2f %8.2f %18.2f %19.2f %9.2f\n", c, unroll, forward_c, update_c,
                  adam_bytes / update_c / 1e9, both_target, both_free, serial - std::min(both_target, both_free));
    }
  }
  return 0;
}
