// 2^x for x <= 0 on the FMA and integer pipes instead of the special-function unit (issue 15: the
// latent attention softmax past the SFU's 16 exponentials a clock an SM, as FlashAttention-4
// does). Host and device: the CPU tests check it against std::exp2.
//
// x = n + f with n = round(x), f in [-0.5, 0.5]: adding 1.5 x 2^23 leaves n in the sum's low
// mantissa bits, and (the sum's bits << 23) is n << 23 modulo 2^32; 2^f is a cubic fitted for
// least maximum relative error (8.3e-5 on [-0.5, 0.5]; 1.6e-4 through this float32 evaluation
// over [-126, 0], against bf16's 3.9e-3); n goes into the exponent bits by an integer add. x is
// clamped to -126 so that the exponent cannot wrap: -inf (a masked score) gives about 1e-38, not
// 0, which a softmax row sum of at least 1 does not see. On the GPU: 3 FADD, 3 FFMA, a max, a
// shift and an integer add.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define HYDRA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HYDRA_HOST_DEVICE inline
#endif

namespace hydra::kernels {

HYDRA_HOST_DEVICE int32_t float_bits(float x) {
  int32_t i;
  std::memcpy(&i, &x, sizeof i);
  return i;
}
HYDRA_HOST_DEVICE float bits_float(int32_t i) {
  float x;
  std::memcpy(&x, &i, sizeof x);
  return x;
}

HYDRA_HOST_DEVICE float exp2_poly(float x) {
  constexpr float kRound = 12582912.f;  // 1.5 x 2^23
  constexpr float kC0 = 0.9999196f, kC1 = 0.69326216f, kC2 = 0.24271414f, kC3 = 0.05521299f;
  x = fmaxf(x, -126.f);
  const float t = x + kRound;
  const float f = x - (t - kRound);
  const float p = fmaf(fmaf(fmaf(kC3, f, kC2), f, kC1), f, kC0);
  return bits_float(float_bits(p) + static_cast<int32_t>(static_cast<uint32_t>(float_bits(t)) << 23));
}

}  // namespace hydra::kernels

#undef HYDRA_HOST_DEVICE
