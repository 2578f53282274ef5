// RMSNorm, RoPE and the SwiGLU gate as autograd Functions with hand-written backwards: one
// node each (a handful of kernels) where the formulas of layers.h record ten to twenty-five
// LibTorch ops forward and backward, and fewer saved tensors (the norms keep their input and a
// float32 rstd per row, not the float32 copy of the input; the gate keeps g and u, not
// silu(g)). On CUDA tensors of bfloat16 or float32 (contiguous or made so) each runs the
// kernels of kernels/ (CUDA build); elsewhere, and for other dtypes, the same Function runs
// ATen formulas, so the CPU path has the same node count and memory.
//
// Semantics are those of the reference formulas in layers.h (rms_norm, head_rms_norm,
// apply_rope, torch::silu(g) * u), which stay for tests and benchmarks: float64 inputs give the
// same numbers up to float64 rounding; half precision computes in float32 and rounds where the
// reference rounds (normalised input rounded to x's type, then times the weight). The kernels
// differ from the reference by reduction order and, for RoPE, by forming angles in float64
// and rotating in float32 before one rounding: within one rounding of the storage type.
#pragma once

#include <tuple>

#include <torch/types.h>

namespace hydra::model {

// rms_norm(x, weight, eps) of layers.h: x [..., n], weight [n].
torch::Tensor fused_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// Grouped form: x [..., n]; weight has groups * n elements (viewed [groups, n]) and row r of
// x viewed [rows, n] uses weight row r % groups. rows must be a multiple of groups.
torch::Tensor fused_grouped_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, int64_t groups, double eps);

// head_rms_norm(x, weight, head_size, eps) of layers.h: x [..., H * head_size], weight
// [H * head_size], each head normalised over its own channels with its own weight.
torch::Tensor fused_head_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, int64_t head_size, double eps);

// The residual update and the next norm in one node: h = x + alpha * y, n = rms_norm(h, weight).
// Returns {h, n}.
std::tuple<torch::Tensor, torch::Tensor> fused_add_rms_norm(const torch::Tensor& x, const torch::Tensor& y,
                                                            double alpha, const torch::Tensor& weight, double eps);

// {x, rms_norm(x, weight, eps)} as one node, for an x that is also used elsewhere (the residual
// stream): its backward adds the gradient of the returned x into the norm's backward pass.
// Use the returned x, not the argument, for the other uses.
std::tuple<torch::Tensor, torch::Tensor> fused_rms_norm_with_input(const torch::Tensor& x, const torch::Tensor& weight,
                                                                   double eps);

// apply_rope(x, positions, theta) of layers.h: x [B, S, heads, D], positions [B, S] int64.
torch::Tensor fused_rope(const torch::Tensor& x, const torch::Tensor& positions, double theta);

// cat([a, apply_rope(b, positions, theta) expanded to a's heads], -1): MLA's query and key, a
// [B, S, H, d_a] the plain part, b [B, S, H or 1, D] the rotated part (1: one rotated key shared
// by every head). Returns [B, S, H, d_a + D].
torch::Tensor fused_rope_concat(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& positions,
                                double theta);

// apply_rope(rms_norm(x, weight, eps), positions, theta): the MQA query/key path; weight [D].
torch::Tensor fused_rms_norm_rope(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& positions,
                                  double theta, double eps);

// torch::silu(g) * u.
torch::Tensor fused_swiglu(const torch::Tensor& g, const torch::Tensor& u);

}  // namespace hydra::model
