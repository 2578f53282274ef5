// Autograd glue between LibTorch tensors and the fused CCQA prologue launchers.
#include "model/ccqa_prologue_fused.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/autograd/custom_function.h>

#include "common/errors.h"
#include "kernels/ccqa_param_pack.h"
#include "kernels/ccqa_prologue.h"
#include "model/dims.h"
#include "model/fused_ops_cuda.h"

namespace hydra::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int kParams = 11;  // the tensors of CcqaPrologueWeights, in declaration order

kernels::CcqaPrologueShape shape_of(const at::Tensor& q0, const at::Tensor& k0, const CcqaPrologueOptions& o) {
  kernels::CcqaPrologueShape s;
  s.batch = q0.size(0);
  s.seq = q0.size(1);
  s.heads = static_cast<int>(q0.size(2) / o.head_dim);
  s.kv_heads = static_cast<int>(k0.size(2) / o.head_dim);
  s.head_dim = static_cast<int>(o.head_dim);
  s.conv_kernel = static_cast<int>(o.conv_kernel);
  s.use_convs = o.use_convs;
  s.qk_gain = static_cast<float>(o.qk_gain);
  s.eps = static_cast<float>(o.eps);
  s.rope_theta = o.theta;
  s.dtype = q0.scalar_type() == at::kBFloat16 ? kernels::CcqaDtype::kBFloat16 : kernels::CcqaDtype::kFloat32;
  return s;
}

// Without convolutions their parameters travel as empty tensors: a custom Function's inputs
// must all be defined (LibTorch 2.x records each input's device).
bool present(const at::Tensor& t) { return t.defined() && t.numel() > 0; }
const float* ptr(const at::Tensor& t) { return present(t) ? t.data_ptr<float>() : nullptr; }
float* mut_ptr(at::Tensor& t) { return present(t) ? t.data_ptr<float>() : nullptr; }

// Where the kernels find the kParams parameters. All float32 (the autocast case): the tensors
// themselves. Otherwise (bf16 parameters): one float32 buffer that a single launch fills,
// instead of a cast, and an autograd node, per tensor. Offsets are 16-byte aligned.
struct ParamLayout {
  bool packed = false;
  int64_t total = 0;  // floats in the buffer
  kernels::CcqaParamSlots slots;
};

ParamLayout layout_of(const variable_list& p) {
  ParamLayout l;
  for (int i = 0; i < kParams; ++i) {
    if (present(p[i]) && p[i].scalar_type() != at::kFloat) l.packed = true;
  }
  for (int i = 0; i < kParams; ++i) {
    if (!present(p[i])) continue;
    HYDRA_CHECK(p[i].scalar_type() == at::kFloat || p[i].scalar_type() == at::kBFloat16,
                "fused CCQA prologue: parameter of type " << p[i].scalar_type());
    kernels::CcqaParamSlot& s = l.slots.slot[i];
    s.offset = l.total;
    s.count = p[i].numel();
    s.type = p[i].scalar_type() == at::kBFloat16 ? kernels::CcqaParamType::kBFloat16 : kernels::CcqaParamType::kFloat32;
    l.total += (s.count + 3) / 4 * 4;
  }
  return l;
}

// The kernels' parameter pointers: into the packed buffer, or the (float32) tensors.
kernels::CcqaPrologueParams params_of(const variable_list& p, const ParamLayout& l, const at::Tensor& packed) {
  const float* q[kParams];
  for (int i = 0; i < kParams; ++i) {
    q[i] = !present(p[i]) ? nullptr : l.packed ? packed.data_ptr<float>() + l.slots.slot[i].offset : ptr(p[i]);
  }
  return {q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8], q[9], q[10]};
}

void save_options(AutogradContext* ctx, const CcqaPrologueOptions& o) {
  ctx->saved_data["head_dim"] = o.head_dim;
  ctx->saved_data["conv_kernel"] = o.conv_kernel;
  ctx->saved_data["use_convs"] = o.use_convs;
  ctx->saved_data["qk_gain"] = o.qk_gain;
  ctx->saved_data["eps"] = o.eps;
  ctx->saved_data["theta"] = o.theta;
}
CcqaPrologueOptions load_options(AutogradContext* ctx) {
  CcqaPrologueOptions o;
  o.head_dim = ctx->saved_data["head_dim"].toInt();
  o.conv_kernel = ctx->saved_data["conv_kernel"].toInt();
  o.use_convs = ctx->saved_data["use_convs"].toBool();
  o.qk_gain = ctx->saved_data["qk_gain"].toDouble();
  o.eps = ctx->saved_data["eps"].toDouble();
  o.theta = ctx->saved_data["theta"].toDouble();
  return o;
}

// q0, k0 (one dtype, contiguous) -> q, k. Nothing but the inputs (and the packed parameters)
// is saved: the backward recomputes the forward per tile.
class PrologueFunction : public torch::autograd::Function<PrologueFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q0, const at::Tensor& k0,
                               const at::Tensor& positions, const at::Tensor& w0, const at::Tensor& w1,
                               const at::Tensor& w2, const at::Tensor& w3, const at::Tensor& w4, const at::Tensor& w5,
                               const at::Tensor& w6, const at::Tensor& w7, const at::Tensor& w8, const at::Tensor& w9,
                               const at::Tensor& w10, const CcqaPrologueOptions& o) {
    const c10::cuda::CUDAGuard guard(q0.device());
    variable_list params = {w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10};
    for (auto& p : params) {
      if (present(p)) {
        HYDRA_CHECK(p.device() == q0.device(), "fused CCQA prologue: parameter on " << p.device());
        p = p.contiguous();
      }
    }
    const auto s = shape_of(q0, k0, o);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    ParamLayout l = layout_of(params);
    at::Tensor packed;
    if (l.packed) {
      packed = at::empty({l.total}, q0.options().dtype(at::kFloat));
      for (int i = 0; i < kParams; ++i) l.slots.slot[i].data = present(params[i]) ? params[i].data_ptr() : nullptr;
      kernels::ccqa_pack_params(l.slots, packed.data_ptr<float>(), stream);
    }
    at::Tensor q = at::empty({s.batch, s.seq, s.heads, s.head_dim}, q0.options());
    at::Tensor k = at::empty({s.batch, s.seq, s.kv_heads, s.head_dim}, q0.options());
    kernels::ccqa_prologue_forward(s, q0.data_ptr(), k0.data_ptr(), positions.data_ptr<int64_t>(),
                                   params_of(params, l, packed), q.data_ptr(), k.data_ptr(), stream);
    // The parameters themselves are saved for their shapes and types (and, unpacked, their
    // data); the packed buffer, if any, so that the backward need not pack again.
    variable_list saved = {q0, k0, positions, packed};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    save_options(ctx, o);
    return {q, k};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &q0 = saved[0], &k0 = saved[1], &positions = saved[2], &packed = saved[3];
    const variable_list params(saved.begin() + 4, saved.end());
    const CcqaPrologueOptions o = load_options(ctx);
    const c10::cuda::CUDAGuard guard(q0.device());
    const auto s = shape_of(q0, k0, o);
    const at::Tensor dq = incoming_gradient(grads[0], {s.batch, s.seq, s.heads, s.head_dim}, q0);
    const at::Tensor dk = incoming_gradient(grads[1], {s.batch, s.seq, s.kv_heads, s.head_dim}, q0);
    at::Tensor dq0 = at::empty_like(q0), dk0 = at::empty_like(k0);
    ParamLayout l = layout_of(params);
    variable_list dparams(kParams);
    for (int i = 0; i < kParams; ++i) {
      if (present(params[i])) dparams[i] = at::empty(params[i].sizes(), params[i].options());
    }
    // Packed: the kernels write float32 gradients into one buffer that a single launch
    // then rounds into the parameters' own types.
    at::Tensor dpacked = l.packed ? at::empty({l.total}, q0.options().dtype(at::kFloat)) : at::Tensor();
    float* gp[kParams];
    for (int i = 0; i < kParams; ++i) {
      gp[i] = !present(params[i]) ? nullptr : l.packed ? dpacked.data_ptr<float>() + l.slots.slot[i].offset
                                                       : mut_ptr(dparams[i]);
    }
    const kernels::CcqaPrologueParamGrads g = {gp[0], gp[1], gp[2], gp[3], gp[4], gp[5],
                                               gp[6], gp[7], gp[8], gp[9], gp[10]};
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    const size_t ws_bytes = kernels::ccqa_prologue_backward_workspace(s);
    at::Tensor ws = at::empty({static_cast<int64_t>(ws_bytes)}, q0.options().dtype(at::kByte));
    kernels::ccqa_prologue_backward(s, q0.data_ptr(), k0.data_ptr(), positions.data_ptr<int64_t>(),
                                    params_of(params, l, packed), dq.data_ptr(), dk.data_ptr(), dq0.data_ptr(),
                                    dk0.data_ptr(), g, ws.data_ptr(), ws_bytes, stream);
    if (l.packed) {
      for (int i = 0; i < kParams; ++i) l.slots.slot[i].data = present(params[i]) ? dparams[i].data_ptr() : nullptr;
      kernels::ccqa_unpack_params(l.slots, dpacked.data_ptr<float>(), stream);
    }
    variable_list out = {dq0, dk0, at::Tensor()};
    out.insert(out.end(), dparams.begin(), dparams.end());
    out.push_back(at::Tensor());  // options
    return out;
  }
};

at::Tensor as_float(const at::Tensor& t) { return t.defined() ? t.to(at::kFloat).contiguous() : t; }

}  // namespace

// Head sizes 16 and 32 only (kCcqaFusedPrologueMaxHeadDim; the kernels took 64 until session 30):
// above them the layer's other path (the convolutions as cuBLAS products, steps 4-7 as one mix
// kernel each way) is faster. The prologue keeps G + 1 heads of a token tile in fp32 shared
// memory, 166 KB at d_h 64 and G 3, so one block an SM ran latency-bound: small's `heads` layer
// (E 768, B 8, S 1024) took 0.622 ms graphed f+b with it and 0.427 ms with the products (GQA
// 0.421), its backward kernel alone 0.30 ms (docs/PERF.md, 2026-12-06, session 29, H100).
bool ccqa_prologue_fused_applies(const at::Tensor& q0, const at::Tensor& k0, const CcqaPrologueOptions& o) {
  if (!q0.is_cuda() || !k0.is_cuda() || q0.dim() != 3 || k0.dim() != 3 || o.head_dim <= 0) return false;
  if (o.head_dim > kCcqaFusedPrologueMaxHeadDim) return false;
  if (q0.scalar_type() != at::kFloat && q0.scalar_type() != at::kBFloat16) return false;
  if (q0.size(0) != k0.size(0) || q0.size(1) != k0.size(1)) return false;
  if (q0.size(2) % o.head_dim != 0 || k0.size(2) % o.head_dim != 0) return false;
  const c10::cuda::CUDAGuard guard(q0.device());
  return kernels::ccqa_prologue_supports(shape_of(q0, k0, o));
}

std::vector<at::Tensor> ccqa_prologue_fused(const at::Tensor& q0, const at::Tensor& k0, const at::Tensor& v,
                                            const at::Tensor& positions, const CcqaPrologueWeights& w,
                                            const CcqaPrologueOptions& o) {
  HYDRA_CHECK(ccqa_prologue_fused_applies(q0, k0, o), "fused CCQA prologue does not handle these inputs");
  const at::ScalarType dtype = q0.scalar_type();
  const at::Tensor q0c = q0.contiguous(), k0c = k0.to(dtype).contiguous(), vc = v.to(dtype).contiguous();
  const at::Tensor pos = positions.to(q0.device(), at::kLong).expand({q0.size(0), q0.size(1)}).contiguous();
  const bool convs = o.use_convs;
  const at::Tensor none = convs ? at::Tensor() : at::empty({0}, q0.options().dtype(at::kFloat));
  // The parameters go in as they are (a bf16 model's are packed inside the Function); the
  // baseline casts each to float32 first, one cast and one autograd node per tensor.
  const bool baseline = o.baseline_glue;
  const auto param = [&](const at::Tensor& t) {
    if (!t.defined()) return t;
    return baseline || (t.scalar_type() != at::kFloat && t.scalar_type() != at::kBFloat16) ? as_float(t) : t;
  };
  const auto conv = [&](const at::Tensor& t) { return convs ? param(t) : none; };
  const variable_list qk = PrologueFunction::apply(
      q0c, k0c, pos, conv(w.conv1_q_w), conv(w.conv1_q_b), conv(w.conv1_k_w), conv(w.conv1_k_b), conv(w.conv2_q_w),
      conv(w.conv2_q_b), conv(w.conv2_k_w), conv(w.conv2_k_b), param(w.q_norm_w), param(w.k_norm_w), param(w.tau), o);
  return {qk[0], qk[1], vc.view({v.size(0), v.size(1), -1, o.head_dim})};
}

}  // namespace hydra::model
