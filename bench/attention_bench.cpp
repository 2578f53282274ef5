// `hydra bench attention` (issue 7): one run measures, side by side and with the same inputs,
//   - the CCQA layer (projections included) with model.ccqa.kernel fused and reference;
//   - a GQA layer of the same E, H, H_kv at full head size (projections, SDPA, W_o);
//   - the latent attention kernels alone, as TFLOP/s and GB/s against a bf16 matmul and a
//     device-to-device copy measured in the same run, and the floor those ceilings set.
// Forward timings run without autograd; forward+backward runs the layer and backward from a
// random output gradient, with x requiring grad. The fused layer is timed twice: as it is and
// built as model::CcqaImpl::kFusedBaseline (the same weights, its host-side glue as before the
// fixed-cost work: per-parameter casts, the eleven-node output norm), so that one run shows both.
// Every layer is also timed as the training step runs it: captured once in a CUDA graph
// (train::StepGraph, as train.cuda_graphs does) and replayed, so that host launch time, which
// sets the eager figures at short lengths (host_median_ms close to median_ms), drops out; the
// graphed figures compare what the layers cost the device.
// HYDRA_BENCH_SHAPES=8x1024,1x4096 keeps the rows of those B x S (for a profiler run).
#include "bench/attention_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/torch.h>

#include "bench/timing.h"
#include "common/errors.h"
#include "common/json.h"
#include "kernels/latent_attention.h"
#include "model/attention.h"
#include "model/attention_core.h"
#include "model/projection.h"
#include "train/step_graph.h"

namespace hydra::bench {
namespace {

using common::Json;

struct Shape {
  int E, H, Hkv, C, B, S;
};

// The seed matrix, then the long sequences of the paper's comparison.
std::vector<Shape> shapes() {
  std::vector<Shape> out;
  for (int B : {1, 4, 8}) {
    for (int S : {256, 512, 1024}) out.push_back({768, 12, 3, 4, B, S});
  }
  for (int S : {4096, 8192, 16384}) out.push_back({2048, 16, 4, 4, 1, S});
  const char* only = std::getenv("HYDRA_BENCH_SHAPES");
  if (only == nullptr || *only == '\0') return out;
  const std::string keep = std::string(",") + only + ",";
  std::vector<Shape> kept;
  for (const Shape& s : out) {
    if (keep.find("," + std::to_string(s.B) + "x" + std::to_string(s.S) + ",") != std::string::npos) kept.push_back(s);
  }
  return kept;
}

struct Ceilings {
  double matmul_tflops = 0, copy_gbs = 0, ex2_per_s = 0;
  double sm_clocks_per_s = 0;  // multiprocessors x clock: the SFU and FMA peaks are per SM clock
};

// Scores a second the softmax can take at best when its exponentials are split between the
// special-function units (16 ex2 a clock an SM) and a polynomial exp2 on the FMA pipes (128 lanes
// a clock an SM; 4 FMA-pipe instructions an exponential, as FlashAttention-4's degree-3
// polynomial with its range reduction), and every score also costs `fma_ops` FMA-pipe operations
// of its own (forward 2: the scale-and-subtract FFMA and the row sum; backward 3: the
// probability's FFMA, dp - delta and the product). A fraction f of the exponentials on the FMA
// pipes balances both units where (1 - f) / 16 = (fma_ops + 4 f) / 128, so f = (8 - fma_ops) / 12.
constexpr double kForwardFmaOps = 2, kBackwardFmaOps = 3;
double softmax_scores_per_s(const Ceilings& c, double fma_ops) {
  const double f = (8.0 - fma_ops) / 12.0;
  return 16.0 / (1.0 - f) * c.sm_clocks_per_s;
}

// The floor of a latent attention pass: the largest of its matrix products at the measured
// matmul ceiling, its bytes at the copy ceiling and its softmax at the SFU and FMA peaks.
double kernel_floor_ms(const Ceilings& c, double flops, double bytes, double scores, double fma_ops) {
  return std::max({flops / (c.matmul_tflops * 1e12), bytes / (c.copy_gbs * 1e9),
                   scores / softmax_scores_per_s(c, fma_ops)}) * 1e3;
}

Ceilings measure_ceilings() {
  const auto bf = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  Ceilings c;
  {
    const int64_t n = 8192;
    const torch::Tensor a = torch::randn({n, n}, bf), b = torch::randn({n, n}, bf);
    torch::Tensor out = torch::empty({n, n}, bf);
    const Timing t = time_device([&] { at::mm_out(out, a, b); });
    c.matmul_tflops = 2.0 * n * n * n / (t.median_ms * 1e-3) / 1e12;
  }
  {
    const int64_t n = int64_t{1} << 29;  // 1 GiB of bf16
    const torch::Tensor src = torch::randn({n}, bf);
    torch::Tensor dst = torch::empty_like(src);
    const Timing t = time_device([&] { dst.copy_(src); });
    c.copy_gbs = 2.0 * 2.0 * n / (t.median_ms * 1e-3) / 1e9;  // bytes read + bytes written
  }
  // The special-function units: 16 ex2 per clock per SM on sm_90 (the softmax's exp). Not
  // measured: from the clock the device reports.
  int sms = 0, khz = 0, dev = 0;
  HYDRA_BENCH_CUDA(cudaGetDevice(&dev));
  HYDRA_BENCH_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  HYDRA_BENCH_CUDA(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev));
  c.sm_clocks_per_s = static_cast<double>(sms) * khz * 1e3;
  c.ex2_per_s = 16.0 * c.sm_clocks_per_s;
  return c;
}

// A GQA layer at full head size d = E / H: x W_q, x W_k, x W_v, SDPA (causal, GQA), W_o.
struct GqaLayer {
  int H, Hkv, d;
  torch::Tensor wq, wk, wv, wo;
  GqaLayer(int E, int H_, int Hkv_) : H(H_), Hkv(Hkv_), d(E / H_) {
    const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
    wq = (0.02 * torch::randn({E, E}, o)).requires_grad_();
    wk = (0.02 * torch::randn({Hkv * d, E}, o)).requires_grad_();
    wv = (0.02 * torch::randn({Hkv * d, E}, o)).requires_grad_();
    wo = (0.02 * torch::randn({E, E}, o)).requires_grad_();
  }
  torch::Tensor forward(const torch::Tensor& x) const {
    const int64_t B = x.size(0), S = x.size(1);
    const torch::Tensor q = at::linear(x, wq).view({B, S, H, d}).transpose(1, 2);
    const torch::Tensor k = at::linear(x, wk).view({B, S, Hkv, d}).transpose(1, 2);
    const torch::Tensor v = at::linear(x, wv).view({B, S, Hkv, d}).transpose(1, 2);
    const torch::Tensor o = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true,
                                                             1.0 / std::sqrt(static_cast<double>(d)), /*enable_gqa=*/true);
    return at::linear(o.transpose(1, 2).reshape({B, S, -1}), wo);
  }
  std::vector<torch::Tensor> parameters() const { return {wq, wk, wv, wo}; }
};

// `compress`: model.ccqa.compress (head_dim: H heads of d/C; heads: H/C heads of d).
std::shared_ptr<model::CcqaAttention> make_ccqa(const Shape& s, model::CcqaImpl impl,
                                                const std::string& compress = "head_dim") {
  model::ModelConfig c;
  c.dim = s.E, c.heads = s.H, c.kv_heads = s.Hkv, c.mlp_ratio = 4.0, c.macro_blocks = 1, c.vocab_size = 128;
  c.ccqa.compression = s.C;
  c.ccqa.compress = compress;
  c.ccqa.kernel = impl == model::CcqaImpl::kReference ? "reference" : "fused";
  torch::manual_seed(11);
  auto layer = std::make_shared<model::CcqaAttention>(c, model::default_projection_factory(),
                                                      model::TensorParallelHooks{}, impl);
  layer->to(torch::kCUDA, torch::kBFloat16);
  return layer;
}

struct FwdBwd {
  Timing fwd, fwdbwd;
  Timing graphed_fwd, graphed_fwdbwd;  // the same passes replayed from a CUDA graph
  // Medians of a separate loop: host time to return from the forward (with autograd) and from
  // backward(), and wall time from the forward's start to the device's finish.
  double host_fwd_ms = 0, host_bwd_ms = 0, wall_ms = 0;
};

void time_layer_passes(const std::function<torch::Tensor(const torch::Tensor&)>& fn, const torch::Tensor& x,
                       const torch::Tensor& dy, const std::vector<torch::Tensor>& params, FwdBwd& r);

// Times forward (no autograd) and forward+backward of fn(x); gradients are dropped after
// each iteration so that no accumulation kernels are timed.
FwdBwd time_layer(const std::function<torch::Tensor(const torch::Tensor&)>& fn, const torch::Tensor& x,
                  const torch::Tensor& dy, const std::vector<torch::Tensor>& params) {
  FwdBwd r;
  r.fwd.median_ms = r.fwdbwd.median_ms = std::nan("");  // stays NaN (null in JSON) if a pass fails
  r.host_fwd_ms = r.host_bwd_ms = r.wall_ms = std::nan("");
  r.graphed_fwd.median_ms = r.graphed_fwdbwd.median_ms = std::nan("");
  try {
    time_layer_passes(fn, x, dy, params, r);
  } catch (const c10::Error& e) {  // out of memory at the largest sizes: report, keep going
    std::printf(" [failed: %s]", std::string(e.what_without_backtrace()).substr(0, 120).c_str());
  }
  c10::cuda::CUDACachingAllocator::emptyCache();
  return r;
}

// `pass` captured in a CUDA graph after the StepGraph's eager warm-up, then its replays timed.
Timing time_graphed(const std::function<torch::Tensor()>& pass) {
  train::StepGraph graph(2, "an attention layer's pass");
  for (int i = 0; i < graph.steps_before_replay(); ++i) graph.run(pass);
  return time_device([&] { graph.run(pass); });
}

void time_layer_passes(const std::function<torch::Tensor(const torch::Tensor&)>& fn, const torch::Tensor& x,
                       const torch::Tensor& dy, const std::vector<torch::Tensor>& params, FwdBwd& r) {
  {
    torch::NoGradGuard no_grad;
    r.fwd = time_device([&] { fn(x); });
  }
  const torch::Tensor xg = x.detach().requires_grad_();
  const auto drop_grads = [&] {
    for (auto p : params) p.mutable_grad().reset();
    xg.mutable_grad().reset();
  };
  r.fwdbwd = time_device([&] {
    fn(xg).backward(dy);
    drop_grads();
  });
  // Where the forward+backward's time goes: if host_fwd + host_bwd is close to wall, the
  // device waits for the host (launch and autograd overhead), not the other way round.
  using clock = std::chrono::steady_clock;
  const auto ms = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  std::vector<double> f, b, w;
  for (int i = 0; i < 21; ++i) {
    HYDRA_BENCH_CUDA(cudaDeviceSynchronize());
    const auto t0 = clock::now();
    const torch::Tensor y = fn(xg);
    const auto t1 = clock::now();
    y.backward(dy);
    const auto t2 = clock::now();
    HYDRA_BENCH_CUDA(cudaDeviceSynchronize());
    const auto t3 = clock::now();
    drop_grads();
    f.push_back(ms(t0, t1));
    b.push_back(ms(t1, t2));
    w.push_back(ms(t0, t3));
  }
  const auto median = [](std::vector<double>& v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  r.host_fwd_ms = median(f);
  r.host_bwd_ms = median(b);
  r.wall_ms = median(w);
  // Graphed: the gradients are dropped before each pass (on the host, also while capturing),
  // so that the captured backward makes them afresh in the graph's pool and a replay writes,
  // not accumulates, them, like the eager loop above.
  try {
    r.graphed_fwd = time_graphed([&] {
      torch::NoGradGuard no_grad;
      return fn(x);
    });
    r.graphed_fwdbwd = time_graphed([&] {
      drop_grads();
      const torch::Tensor y = fn(xg);
      y.backward(dy);
      return y;
    });
  } catch (const std::exception& e) {  // a layer that cannot be captured: its figures stay NaN
    std::printf(" [graph failed: %s]", std::string(e.what()).substr(0, 160).c_str());
  }
  drop_grads();
}

struct KernelFigures {
  Timing fwd, bwd;               // the default variant (what the model runs)
  double fwd_mt_ms[2], bwd_mt_ms[2];  // medians of 1 and 2 rows of 16 per warp (NaN: not built)
  double fwd_tiles_inner_ms = 0, bwd_tiles_inner_ms = 0;  // medians with the old block order
  double fwd_wgmma_ms = 0, bwd_wgmma_ms = 0;  // on warpgroup MMAs (LatentAttentionVariant::wgmma_*)
  std::vector<std::pair<std::string, double>> fwd_variants_ms;  // the forward's other variants by name
  std::vector<std::pair<std::string, double>> bwd_variants_ms;  // the backward's, by name
  std::vector<std::pair<int, double>> bwd_split_ms;  // backward median by head split (every divisor of G)
  int bwd_split_default = 0;                         // the launcher's choice
  double flops_fwd, flops_bwd, bytes_fwd, bytes_bwd, ex2;  // ex2: exponentials per pass
};

// A bf16 [B, S, heads, D] tensor as the latent attention launchers take it.
kernels::BshdConst bshd_const(const torch::Tensor& t) {
  return {reinterpret_cast<const __nv_bfloat16*>(t.data_ptr()), t.stride(0), t.stride(1), t.stride(2)};
}
kernels::BshdMut bshd_mut(torch::Tensor& t) {
  return {reinterpret_cast<__nv_bfloat16*>(t.data_ptr()), t.stride(0), t.stride(1), t.stride(2)};
}

// The latent attention launchers alone on the CCQA latent shape (head size E / H / C).
KernelFigures time_kernels(const Shape& s) {
  const int D = s.E / s.H / s.C;
  const kernels::LatentAttentionShape shape{s.B, s.S, s.H, s.Hkv, D};
  const auto bf = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const torch::Tensor q = torch::randn({s.B, s.S, s.H, D}, bf), k = torch::randn({s.B, s.S, s.Hkv, D}, bf),
                      v = torch::randn({s.B, s.S, s.Hkv, D}, bf), dout = torch::randn({s.B, s.S, s.H, D}, bf);
  torch::Tensor out = torch::empty_like(q), dq = torch::empty_like(q), dk = torch::empty_like(k),
                dv = torch::empty_like(v);
  torch::Tensor lse = torch::empty({s.B, s.H, s.S}, bf.dtype(torch::kFloat));
  const int group = s.H / s.Hkv;
  kernels::LatentAttentionVariant largest;  // the workspace of the largest head split serves every variant
  largest.bwd_head_split = group;
  torch::Tensor ws = torch::empty({static_cast<int64_t>(kernels::latent_attention_backward_workspace(shape, largest))},
                                  bf.dtype(torch::kByte));
  const size_t ws_bytes = ws.numel();
  const auto cv = bshd_const;
  const auto mv = bshd_mut;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  KernelFigures f;
  f.fwd = time_device([&] {
    kernels::latent_attention_forward(shape, scale, cv(q), cv(k), cv(v), mv(out), lse.data_ptr<float>(), stream);
  });
  f.bwd = time_device([&] {
    kernels::latent_attention_backward(shape, scale, cv(q), cv(k), cv(v), cv(out), cv(dout), lse.data_ptr<float>(),
                                       mv(dq), mv(dk), mv(dv), ws.data_ptr(), ws_bytes, stream);
  });
  for (int mt = 1; mt <= 2; ++mt) {
    f.fwd_mt_ms[mt - 1] = f.bwd_mt_ms[mt - 1] = std::nan("");
    if (D == 64 && mt == 2) continue;  // spills: not built
    const kernels::LatentAttentionVariant variant{mt, mt};
    f.fwd_mt_ms[mt - 1] = time_device([&] {
      kernels::latent_attention_forward(shape, scale, cv(q), cv(k), cv(v), mv(out), lse.data_ptr<float>(), stream, variant);
    }).median_ms;
    f.bwd_mt_ms[mt - 1] = time_device([&] {
      kernels::latent_attention_backward(shape, scale, cv(q), cv(k), cv(v), cv(out), cv(dout), lse.data_ptr<float>(),
                                         mv(dq), mv(dk), mv(dv), ws.data_ptr(), ws_bytes, stream, variant);
    }).median_ms;
  }
  // The block order of before 2026-12-03 (tiles innermost), beside the default.
  kernels::LatentAttentionVariant inner;
  inner.tiles_inner = true;
  f.fwd_tiles_inner_ms = time_device([&] {
    kernels::latent_attention_forward(shape, scale, cv(q), cv(k), cv(v), mv(out), lse.data_ptr<float>(), stream, inner);
  }).median_ms;
  f.bwd_tiles_inner_ms = time_device([&] {
    kernels::latent_attention_backward(shape, scale, cv(q), cv(k), cv(v), cv(out), cv(dout), lse.data_ptr<float>(),
                                       mv(dq), mv(dk), mv(dv), ws.data_ptr(), ws_bytes, stream, inner);
  }).median_ms;
  kernels::LatentAttentionVariant wgmma;
  wgmma.wgmma_forward = true;
  f.fwd_wgmma_ms = time_device([&] {
    kernels::latent_attention_forward(shape, scale, cv(q), cv(k), cv(v), mv(out), lse.data_ptr<float>(), stream, wgmma);
  }).median_ms;
  kernels::LatentAttentionVariant wgmma_bwd;
  wgmma_bwd.wgmma_backward = true;
  f.bwd_wgmma_ms = time_device([&] {
    kernels::latent_attention_backward(shape, scale, cv(q), cv(k), cv(v), cv(out), cv(dout), lse.data_ptr<float>(),
                                       mv(dq), mv(dk), mv(dv), ws.data_ptr(), ws_bytes, stream, wgmma_bwd);
  }).median_ms;
  // The forward with its registers left to the compiler, capped for 5 and 6 resident blocks, and
  // with part of its exponentials on the FMA pipes.
  std::vector<std::pair<std::string, kernels::LatentAttentionVariant>> forward_variants;
  if (D <= 32) {
    for (const int min_blocks : {-1, 5, 6}) {
      kernels::LatentAttentionVariant capped;
      capped.fwd_min_blocks = min_blocks;
      forward_variants.emplace_back(min_blocks < 0 ? "registers uncapped" : "min blocks " + std::to_string(min_blocks),
                                    capped);
    }
    for (const int poly : {1, 2}) {
      kernels::LatentAttentionVariant fma_exp;
      fma_exp.fwd_poly_exp = poly;
      forward_variants.emplace_back(poly == 1 ? "an eighth of exp2 on FMA" : "a quarter of exp2 on FMA", fma_exp);
    }
  }
  // The default once more, last: how far one kernel's median moves between two timings in a run.
  forward_variants.emplace_back("default timed again", kernels::LatentAttentionVariant{});
  for (const auto& [label, variant] : forward_variants) {
    f.fwd_variants_ms.emplace_back(label, time_device([&] {
      kernels::latent_attention_forward(shape, scale, cv(q), cv(k), cv(v), mv(out), lse.data_ptr<float>(), stream,
                                        variant);
    }).median_ms);
  }
  // The backward's default timed again (its variants: rows per warp and head splits, above and below).
  std::vector<std::pair<std::string, kernels::LatentAttentionVariant>> backward_variants;
  backward_variants.emplace_back("default timed again", kernels::LatentAttentionVariant{});
  for (const auto& [label, variant] : backward_variants) {
    f.bwd_variants_ms.emplace_back(label, time_device([&] {
      kernels::latent_attention_backward(shape, scale, cv(q), cv(k), cv(v), cv(out), cv(dout), lse.data_ptr<float>(),
                                         mv(dq), mv(dk), mv(dv), ws.data_ptr(), ws_bytes, stream, variant);
    }).median_ms);
  }
  // The backward by head split (LatentAttentionVariant::bwd_head_split), beside the default's choice.
  f.bwd_split_default = kernels::latent_attention_backward_head_split(shape);
  for (int split = 1; split <= group; ++split) {
    if (group % split) continue;
    kernels::LatentAttentionVariant variant;
    variant.bwd_head_split = split;
    f.bwd_split_ms.emplace_back(split, time_device([&] {
      kernels::latent_attention_backward(shape, scale, cv(q), cv(k), cv(v), cv(out), cv(dout), lse.data_ptr<float>(),
                                         mv(dq), mv(dk), mv(dv), ws.data_ptr(), ws_bytes, stream, variant);
    }).median_ms);
  }
  const double scores = static_cast<double>(s.B) * s.H * s.S * (s.S + 1.0) / 2.0;  // causal q.k pairs
  const double q_bytes = 2.0 * s.B * s.S * s.H * D, kv_bytes = 2.0 * s.B * s.S * s.Hkv * D, lse_bytes = 4.0 * s.B * s.H * s.S;
  f.flops_fwd = 4.0 * scores * D;   // q k^T and p v
  f.flops_bwd = 10.0 * scores * D;  // q k^T again, dout v^T, p^T dout, ds^T q, ds k
  f.bytes_fwd = 2 * q_bytes + 2 * kv_bytes + lse_bytes;  // read q, k, v; write out, lse
  f.bytes_bwd = 4 * q_bytes + 4 * kv_bytes + lse_bytes;  // read q, k, v, out, dout, lse; write dq, dk, dv
  f.ex2 = scores;
  return f;
}

// The heads of one causal attention: CCQA's latent shape in either layout (head_dim: H heads of
// E / H / C; heads: H / C heads and ceil(H_kv / C) KV heads of E / H), or a plain layer's.
struct AttentionHeads {
  int heads = 0, kv_heads = 0, head_dim = 0;
};
AttentionHeads ccqa_latent_heads(const Shape& s, bool heads_layout) {
  if (heads_layout) return {s.H / s.C, (s.Hkv + s.C - 1) / s.C, s.E / s.H};
  return {s.H, s.Hkv, s.E / s.H / s.C};
}

// The causal attention alone at those heads, random bf16 inputs: our latent kernel (where it
// takes the head size) against PyTorch's SDPA (cuDNN or FlashAttention: what the GQA baseline and
// the model's MQA layers run, and the `heads` layout at head size 128), forward and
// forward+backward. Which of the two a layer should call at each head size.
struct KernelVsSdpa {
  AttentionHeads a;
  double kernel_fwd_ms = std::nan(""), kernel_fwdbwd_ms = std::nan(""), sdpa_fwd_ms = 0, sdpa_fwdbwd_ms = 0;
};

KernelVsSdpa time_kernel_vs_sdpa(const Shape& s, const AttentionHeads& a) {
  KernelVsSdpa r{a};
  const auto bf = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const torch::Tensor q = torch::randn({s.B, s.S, a.heads, a.head_dim}, bf);
  const torch::Tensor k = torch::randn({s.B, s.S, a.kv_heads, a.head_dim}, bf), v = torch::randn_like(k);
  const torch::Tensor dout = torch::randn_like(q);
  const double scale = 1.0 / std::sqrt(static_cast<double>(a.head_dim));
  if (kernels::latent_attention_supports(a.head_dim)) {
    const kernels::LatentAttentionShape shape{s.B, s.S, a.heads, a.kv_heads, a.head_dim};
    torch::Tensor out = torch::empty_like(q), dq = torch::empty_like(q), dk = torch::empty_like(k),
                  dv = torch::empty_like(v);
    torch::Tensor lse = torch::empty({s.B, a.heads, s.S}, bf.dtype(torch::kFloat));
    torch::Tensor ws = torch::empty({static_cast<int64_t>(kernels::latent_attention_backward_workspace(shape))},
                                    bf.dtype(torch::kByte));
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    const auto forward = [&] {
      kernels::latent_attention_forward(shape, static_cast<float>(scale), bshd_const(q), bshd_const(k), bshd_const(v),
                                        bshd_mut(out), lse.data_ptr<float>(), stream);
    };
    r.kernel_fwd_ms = time_device(forward).median_ms;
    r.kernel_fwdbwd_ms = time_device([&] {
      forward();
      kernels::latent_attention_backward(shape, static_cast<float>(scale), bshd_const(q), bshd_const(k), bshd_const(v),
                                         bshd_const(out), bshd_const(dout), lse.data_ptr<float>(), bshd_mut(dq),
                                         bshd_mut(dk), bshd_mut(dv), ws.data_ptr(), ws.numel(), stream);
    }).median_ms;
  }
  r.sdpa_fwd_ms = time_device([&] {
    const torch::NoGradGuard no_grad;
    model::causal_attention(q, k, v, scale);
  }).median_ms;
  const torch::Tensor qg = q.detach().requires_grad_(), kg = k.detach().requires_grad_(),
                      vg = v.detach().requires_grad_();
  r.sdpa_fwdbwd_ms = time_device([&] {
    const torch::Tensor o = model::causal_attention(qg, kg, vg, scale);
    torch::autograd::grad({o}, {qg, kg, vg}, {dout});
  }).median_ms;
  return r;
}

Json kernel_vs_sdpa_json(const KernelVsSdpa& r) {
  Json j = Json::object();
  j["heads"] = r.a.heads, j["kv_heads"] = r.a.kv_heads, j["head_dim"] = r.a.head_dim;
  j["kernel_forward_ms"] = r.kernel_fwd_ms, j["kernel_forward_backward_ms"] = r.kernel_fwdbwd_ms;
  j["sdpa_forward_ms"] = r.sdpa_fwd_ms, j["sdpa_forward_backward_ms"] = r.sdpa_fwdbwd_ms;
  return j;
}

Json timing_json(const Timing& t) {
  Json j = Json::object();
  j["median_ms"] = t.median_ms;
  j["min_ms"] = t.min_ms;
  j["iters"] = t.iters;
  j["host_median_ms"] = t.host_median_ms;
  return j;
}

Json layer_json(const FwdBwd& t) {
  Json j = Json::object();
  j["forward"] = timing_json(t.fwd);
  j["forward_backward"] = timing_json(t.fwdbwd);
  j["graphed_forward"] = timing_json(t.graphed_fwd);
  j["graphed_forward_backward"] = timing_json(t.graphed_fwdbwd);
  j["host_forward_with_autograd_ms"] = t.host_fwd_ms;
  j["host_backward_ms"] = t.host_bwd_ms;
  j["wall_forward_backward_ms"] = t.wall_ms;
  return j;
}

Json kernel_json(const KernelFigures& f, const Ceilings& c) {
  Json j = Json::object();
  auto pass = [&](const char* name, const Timing& t, double flops, double bytes, double fma_ops) {
    const double s = t.median_ms * 1e-3;
    const double floor_ms = kernel_floor_ms(c, flops, bytes, f.ex2, fma_ops);
    Json p = timing_json(t);
    p["tflops"] = flops / s / 1e12;
    p["gbs"] = bytes / s / 1e9;
    p["floor_ms"] = floor_ms;
    p["of_floor"] = floor_ms / t.median_ms;  // 1.0 = at the floor the ceilings set
    p["ex2_floor_ms"] = f.ex2 / c.ex2_per_s * 1e3;  // the exponentials on the SFU alone
    p["softmax_floor_ms"] = f.ex2 / softmax_scores_per_s(c, fma_ops) * 1e3;
    // Exponentials a second achieved, against the SFU's peak and the SFU and FMA pipes' joint one.
    p["exponentials_per_s"] = f.ex2 / s;
    p["exponentials_of_sfu_peak"] = f.ex2 / s / c.ex2_per_s;
    p["exponentials_of_joint_peak"] = f.ex2 / s / softmax_scores_per_s(c, fma_ops);
    p["matmul_floor_ms"] = flops / (c.matmul_tflops * 1e12) * 1e3;
    j[name] = std::move(p);
  };
  pass("forward", f.fwd, f.flops_fwd, f.bytes_fwd, kForwardFmaOps);
  pass("backward", f.bwd, f.flops_bwd, f.bytes_bwd, kBackwardFmaOps);
  Json v = Json::object();
  v["forward_mtiles1_ms"] = f.fwd_mt_ms[0];
  v["forward_mtiles2_ms"] = f.fwd_mt_ms[1];
  v["backward_mtiles1_ms"] = f.bwd_mt_ms[0];
  v["backward_mtiles2_ms"] = f.bwd_mt_ms[1];
  v["forward_tiles_inner_ms"] = f.fwd_tiles_inner_ms;
  v["backward_tiles_inner_ms"] = f.bwd_tiles_inner_ms;
  v["forward_wgmma_ms"] = f.fwd_wgmma_ms;
  v["backward_wgmma_ms"] = f.bwd_wgmma_ms;
  for (const auto& [pass_name, variants] : {std::pair{"forward_", &f.fwd_variants_ms}, {"backward_", &f.bwd_variants_ms}}) {
    for (const auto& [label, ms] : *variants) {
      std::string key = pass_name + label + "_ms";
      std::replace(key.begin(), key.end(), ' ', '_');
      v[key] = ms;
    }
  }
  Json split = Json::object();
  for (const auto& [slices, ms] : f.bwd_split_ms) split[std::to_string(slices)] = ms;
  v["backward_head_split_ms"] = std::move(split);
  v["backward_head_split_default"] = f.bwd_split_default;
  j["variants"] = std::move(v);
  return j;
}

std::string today() {
  char buf[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  return buf;
}

}  // namespace

int run_attention_bench(const std::string& json_path) {
  HYDRA_CHECK(torch::cuda::is_available(), "hydra bench attention: no CUDA device");
  cudaDeviceProp prop{};
  HYDRA_BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("bench attention: %s, %d SMs; measuring ceilings\n", prop.name, prop.multiProcessorCount);
  std::fflush(stdout);
  const Ceilings ceil = measure_ceilings();
  std::printf("bench attention: bf16 matmul %.0f TFLOP/s, copy %.0f GB/s\n", ceil.matmul_tflops, ceil.copy_gbs);

  Json root = Json::object();
  root["device"] = std::string(prop.name);
  root["sms"] = prop.multiProcessorCount;
  root["date"] = today();
  root["torch"] = std::string(TORCH_VERSION);
  Json& ceilings = root["ceilings"] = Json::object();
  ceilings["bf16_matmul_tflops"] = ceil.matmul_tflops;
  ceilings["copy_gbs"] = ceil.copy_gbs;
  ceilings["ex2_per_s_nominal"] = ceil.ex2_per_s;
  Json& rows = root["rows"] = Json::array();

  const std::vector<Shape> all = shapes();
  std::vector<std::vector<double>> table;  // for the closing table
  for (size_t i = 0; i < all.size(); ++i) {
    const Shape& s = all[i];
    std::printf("[%zu/%zu] E %d H %d H_kv %d C %d B %d S %d ...", i + 1, all.size(), s.E, s.H, s.Hkv, s.C, s.B, s.S);
    std::fflush(stdout);
    const auto bf = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
    const torch::Tensor x = torch::randn({s.B, s.S, s.E}, bf), dy = torch::randn({s.B, s.S, s.E}, bf);
    const torch::Tensor pos = torch::arange(s.S, bf.dtype(torch::kLong)).unsqueeze(0).expand({s.B, s.S}).contiguous();

    auto fused = make_ccqa(s, model::CcqaImpl::kFused);
    const FwdBwd tf = time_layer([&](const torch::Tensor& in) { return fused->forward(in, pos); }, x, dy, fused->parameters());
    fused.reset();
    auto baseline = make_ccqa(s, model::CcqaImpl::kFusedBaseline);
    const FwdBwd tb =
        time_layer([&](const torch::Tensor& in) { return baseline->forward(in, pos); }, x, dy, baseline->parameters());
    baseline.reset();
    auto ref = make_ccqa(s, model::CcqaImpl::kReference);
    const FwdBwd tr = time_layer([&](const torch::Tensor& in) { return ref->forward(in, pos); }, x, dy, ref->parameters());
    ref.reset();
    // The paper's layout (compress: heads, H/C heads of the full d): the fused path (our latent
    // kernel where it takes the head size, else SDPA) and the reference ops (SDPA).
    auto heads = make_ccqa(s, model::CcqaImpl::kFused, "heads");
    const FwdBwd th = time_layer([&](const torch::Tensor& in) { return heads->forward(in, pos); }, x, dy, heads->parameters());
    heads.reset();
    auto heads_ref = make_ccqa(s, model::CcqaImpl::kReference, "heads");
    const FwdBwd thr =
        time_layer([&](const torch::Tensor& in) { return heads_ref->forward(in, pos); }, x, dy, heads_ref->parameters());
    heads_ref.reset();
    const GqaLayer gqa(s.E, s.H, s.Hkv);
    const FwdBwd tg = time_layer([&](const torch::Tensor& in) { return gqa.forward(in); }, x, dy, gqa.parameters());
    const KernelFigures kf = time_kernels(s);
    const KernelVsSdpa vs_head_dim = time_kernel_vs_sdpa(s, ccqa_latent_heads(s, false)),
                       vs_heads = time_kernel_vs_sdpa(s, ccqa_latent_heads(s, true)),
                       vs_mqa = time_kernel_vs_sdpa(s, {s.H, 1, s.E / s.H});  // the pattern's MQA layers

    Json row = Json::object();
    row["E"] = s.E, row["H"] = s.H, row["H_kv"] = s.Hkv, row["C"] = s.C, row["B"] = s.B, row["S"] = s.S;
    row["ccqa_fused"] = layer_json(tf);
    row["ccqa_fused_baseline"] = layer_json(tb);
    row["ccqa_reference"] = layer_json(tr);
    row["gqa_flash"] = layer_json(tg);
    row["ccqa_heads_fused"] = layer_json(th);
    row["ccqa_heads_reference"] = layer_json(thr);
    const double heads_fwdbwd = std::min(th.fwdbwd.median_ms, thr.fwdbwd.median_ms);
    const double heads_fwd = std::min(th.fwd.median_ms, thr.fwd.median_ms);
    row["speedup_fwdbwd_heads_vs_gqa_flash"] = tg.fwdbwd.median_ms / heads_fwdbwd;
    row["speedup_fwd_heads_vs_gqa_flash"] = tg.fwd.median_ms / heads_fwd;
    row["speedup_fwdbwd_vs_baseline"] = tb.fwdbwd.median_ms / tf.fwdbwd.median_ms;
    row["speedup_fwdbwd_vs_reference"] = tr.fwdbwd.median_ms / tf.fwdbwd.median_ms;
    row["speedup_fwdbwd_vs_gqa_flash"] = tg.fwdbwd.median_ms / tf.fwdbwd.median_ms;
    // Graphed (the training step's way): the fused paths against GQA, forward and f+b.
    row["graphed_speedup_fwd_vs_gqa_flash"] = tg.graphed_fwd.median_ms / tf.graphed_fwd.median_ms;
    row["graphed_speedup_fwdbwd_vs_gqa_flash"] = tg.graphed_fwdbwd.median_ms / tf.graphed_fwdbwd.median_ms;
    row["graphed_speedup_fwd_heads_vs_gqa_flash"] = tg.graphed_fwd.median_ms / th.graphed_fwd.median_ms;
    row["graphed_speedup_fwdbwd_heads_vs_gqa_flash"] = tg.graphed_fwdbwd.median_ms / th.graphed_fwdbwd.median_ms;
    row["latent_kernels"] = kernel_json(kf, ceil);
    Json& vs = row["attention_kernel_vs_sdpa"] = Json::object();
    vs["head_dim"] = kernel_vs_sdpa_json(vs_head_dim);
    vs["heads"] = kernel_vs_sdpa_json(vs_heads);
    vs["mqa"] = kernel_vs_sdpa_json(vs_mqa);
    rows.push(std::move(row));
    const double fwd_floor = kernel_floor_ms(ceil, kf.flops_fwd, kf.bytes_fwd, kf.ex2, kForwardFmaOps);
    const double bwd_floor = kernel_floor_ms(ceil, kf.flops_bwd, kf.bytes_bwd, kf.ex2, kBackwardFmaOps);
    table.push_back({tf.fwd.median_ms, tf.fwdbwd.median_ms, tr.fwd.median_ms, tr.fwdbwd.median_ms, tg.fwd.median_ms,
                     tg.fwdbwd.median_ms, kf.fwd.median_ms, kf.bwd.median_ms, fwd_floor / kf.fwd.median_ms,
                     bwd_floor / kf.bwd.median_ms, tb.fwd.median_ms, tb.fwdbwd.median_ms, heads_fwd, heads_fwdbwd,
                     tf.graphed_fwd.median_ms, tf.graphed_fwdbwd.median_ms, th.graphed_fwd.median_ms,
                     th.graphed_fwdbwd.median_ms, tg.graphed_fwd.median_ms, tg.graphed_fwdbwd.median_ms});
    std::printf(" fused %.3f / %.3f ms (baseline %.3f / %.3f), reference %.3f / %.3f ms, gqa %.3f / %.3f ms (fwd / "
                "fwd+bwd); kernels fwd %.3f (1 row/warp %.3f, 2 %.3f) bwd %.3f (%.3f, %.3f) ms\n",
                tf.fwd.median_ms, tf.fwdbwd.median_ms, tb.fwd.median_ms, tb.fwdbwd.median_ms, tr.fwd.median_ms,
                tr.fwdbwd.median_ms, tg.fwd.median_ms, tg.fwdbwd.median_ms, kf.fwd.median_ms, kf.fwd_mt_ms[0],
                kf.fwd_mt_ms[1], kf.bwd.median_ms, kf.bwd_mt_ms[0], kf.bwd_mt_ms[1]);
    for (const KernelVsSdpa* r : {&vs_head_dim, &vs_heads, &vs_mqa}) {
      std::printf("    attention alone, %d heads / %d KV heads of %d: latent kernel %.3f / %.3f ms, SDPA %.3f / %.3f ms "
                  "(fwd / fwd+bwd)\n",
                  r->a.heads, r->a.kv_heads, r->a.head_dim, r->kernel_fwd_ms, r->kernel_fwdbwd_ms, r->sdpa_fwd_ms,
                  r->sdpa_fwdbwd_ms);
    }
    std::printf("    on warpgroup MMAs: forward %.3f ms, backward %.3f ms (default, mma.sync: %.3f, %.3f)\n",
                kf.fwd_wgmma_ms, kf.bwd_wgmma_ms, kf.fwd.median_ms, kf.bwd.median_ms);
    std::printf("    forward variants:");
    for (const auto& [label, ms] : kf.fwd_variants_ms) std::printf(" %s %.3f ms,", label.c_str(), ms);
    std::printf(" default %.3f ms\n", kf.fwd.median_ms);
    std::printf("    backward variants:");
    for (const auto& [label, ms] : kf.bwd_variants_ms) std::printf(" %s %.3f ms,", label.c_str(), ms);
    std::printf(" default %.3f ms\n", kf.bwd.median_ms);
    std::printf("    backward by head split (default %d):", kf.bwd_split_default);
    for (const auto& [slices, ms] : kf.bwd_split_ms) std::printf(" %d: %.3f ms", slices, ms);
    std::printf("\n");
    // Host side of forward+backward: enqueue time inside the timed iteration, then the
    // separate loop's forward / backward() / wall medians.
    const auto host = [](const char* name, const FwdBwd& t) {
      std::printf("    %-14s f+b %.3f ms on the device, host %.3f ms in the iteration; host fwd %.3f + bwd %.3f, wall %.3f ms;"
                  " graphed fwd %.3f, f+b %.3f ms\n",
                  name, t.fwdbwd.median_ms, t.fwdbwd.host_median_ms, t.host_fwd_ms, t.host_bwd_ms, t.wall_ms,
                  t.graphed_fwd.median_ms, t.graphed_fwdbwd.median_ms);
    };
    host("fused", tf);
    host("fused baseline", tb);
    host("reference", tr);
    host("gqa", tg);
    host("heads fused", th);
    host("heads ref", thr);
    std::fflush(stdout);
  }

  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << root.dump(2) << "\n";
    if (!f) HYDRA_FAIL(common::InputError, "hydra bench attention: cannot write " << json_path);
  }
  std::printf("\n%-6s %-5s %-6s | %-17s | %-17s | %-17s | %-17s | %-8s %-8s | %-15s | %-11s | %-17s | %-11s\n", "E",
              "B", "S", "fused fwd/f+b ms", "baseline fwd/f+b", "ref fwd/f+b ms", "gqa fwd/f+b ms", "x ref", "x gqa",
              "kern fwd/bwd ms", "of floor", "heads fwd/f+b ms", "heads x gqa");
  for (size_t i = 0; i < all.size(); ++i) {
    const auto& t = table[i];
    std::printf("%-6d %-5d %-6d | %7.3f %9.3f | %7.3f %9.3f | %7.3f %9.3f | %7.3f %9.3f | %8.2f %8.2f | %6.3f %8.3f | "
                "%4.2f %4.2f | %7.3f %9.3f | %4.2f %4.2f\n",
                all[i].E, all[i].B, all[i].S, t[0], t[1], t[10], t[11], t[2], t[3], t[4], t[5], t[3] / t[1], t[5] / t[1],
                t[6], t[7], t[8], t[9], t[12], t[13], t[4] / t[12], t[5] / t[13]);
  }
  std::printf("\nCUDA graphs (each layer captured once, replays timed: the training step's way)\n");
  std::printf("%-6s %-5s %-6s | %-17s | %-17s | %-17s | %-11s | %-11s\n", "E", "B", "S", "fused fwd/f+b ms",
              "heads fwd/f+b ms", "gqa fwd/f+b ms", "fused x gqa", "heads x gqa");
  for (size_t i = 0; i < all.size(); ++i) {
    const auto& t = table[i];
    std::printf("%-6d %-5d %-6d | %7.3f %9.3f | %7.3f %9.3f | %7.3f %9.3f | %4.2f %4.2f | %4.2f %4.2f\n", all[i].E,
                all[i].B, all[i].S, t[14], t[15], t[16], t[17], t[18], t[19], t[18] / t[14], t[19] / t[15],
                t[18] / t[16], t[19] / t[17]);
  }
  return 0;
}

}  // namespace hydra::bench
