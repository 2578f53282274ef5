// Tensors to the launchers of kernels/rms_norm.h, kernels/rope.h and kernels/swiglu.h: the
// CUDA half of fused_ops.cpp's Functions (CUDA build only). Each function makes its inputs
// contiguous, allocates the outputs on the caching allocator and launches on the current
// stream of the inputs' device. The caller has checked fused_kernels_apply and the shapes.
#pragma once

#include <initializer_list>
#include <tuple>

#include <ATen/core/Tensor.h>

#include "kernels/storage_type.h"

namespace hydra::model {

// True when every tensor is a CUDA tensor on one device, all of one dtype, bfloat16 or float32.
bool fused_kernels_apply(std::initializer_list<at::Tensor> tensors);

// x [B, S, C] itself when token (b, s) starts at (b S + s) times one row stride with unit
// channel stride (contiguous, or a column block of a wider tensor), else a contiguous copy.
at::Tensor with_even_rows(const at::Tensor& x);

// A custom Function's incoming gradient g in like's dtype and contiguous, or zeros of `sizes`
// where the output did not reach the loss (autograd then hands an undefined tensor).
at::Tensor incoming_gradient(const at::Tensor& g, at::IntArrayRef sizes, const at::Tensor& like);

// The kernels' storage type of t (bfloat16 or float32; any other dtype is an error).
kernels::StorageType storage_of(const at::Tensor& t);

// x [..., n], weight groups * n. Returns {y (x's shape), rstd [rows] float32}.
std::tuple<at::Tensor, at::Tensor> rms_norm_forward_cuda(const at::Tensor& x, const at::Tensor& weight, int64_t groups,
                                                         double eps);
// Returns {dx, dweight (undefined unless need_dw)}.
std::tuple<at::Tensor, at::Tensor> rms_norm_backward_cuda(const at::Tensor& dy, const at::Tensor& x,
                                                          const at::Tensor& weight, const at::Tensor& rstd,
                                                          int64_t groups, bool need_dw);

// Returns {h = x + alpha y, rms_norm(h), rstd}.
std::tuple<at::Tensor, at::Tensor, at::Tensor> add_rms_norm_forward_cuda(const at::Tensor& x, const at::Tensor& y,
                                                                         double alpha, const at::Tensor& weight,
                                                                         double eps);
// From the gradients of h and of the norm. Returns {dx, dy (undefined unless need_dy), dweight
// (undefined unless need_dw)}.
std::tuple<at::Tensor, at::Tensor, at::Tensor> add_rms_norm_backward_cuda(const at::Tensor& dh, const at::Tensor& dn,
                                                                          const at::Tensor& h, const at::Tensor& weight,
                                                                          const at::Tensor& rstd, double alpha,
                                                                          bool need_dy, bool need_dw);

// x [B, S, heads, D], positions [B, S] int64; inverse: the rotation by -angle (the backward).
at::Tensor rope_cuda(const at::Tensor& x, const at::Tensor& positions, double theta, bool inverse);

// [a ; RoPE(b)] per head: a [B, S, heads, d_a], b [B, S, heads or 1, D] -> [B, S, heads, d_a + D].
at::Tensor rope_concat_forward_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& positions,
                                    double theta);
// Returns {da [B, S, heads, d_a], db [B, S, b_heads, D]} from dout [B, S, heads, d_a + D].
std::tuple<at::Tensor, at::Tensor> rope_concat_backward_cuda(const at::Tensor& dout, int64_t d_a, int64_t b_heads,
                                                             const at::Tensor& positions, double theta);

// RoPE(rms_norm(x, weight)) with weight [D]. Returns {out, rstd [B * S * heads] float32}.
std::tuple<at::Tensor, at::Tensor> rms_norm_rope_forward_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                              const at::Tensor& positions, double theta, double eps);
// Returns {dx, dweight (undefined unless need_dw)}.
std::tuple<at::Tensor, at::Tensor> rms_norm_rope_backward_cuda(const at::Tensor& dout, const at::Tensor& x,
                                                               const at::Tensor& weight, const at::Tensor& positions,
                                                               const at::Tensor& rstd, double theta, bool need_dw);

at::Tensor swiglu_forward_cuda(const at::Tensor& g, const at::Tensor& u);
// Returns {dg, du}.
std::tuple<at::Tensor, at::Tensor> swiglu_backward_cuda(const at::Tensor& g, const at::Tensor& u,
                                                        const at::Tensor& dout);

}  // namespace hydra::model
