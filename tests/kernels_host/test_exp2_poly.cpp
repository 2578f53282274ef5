// kernels/exp2_poly.h, the latent attention softmax's exponential on the FMA pipes, against
// std::exp2 in float64 over every input the softmax gives it (x <= 0, masked scores -inf).
#include "kernels/exp2_poly.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace hydra::kernels {
namespace {

double relative_error(float x) {
  const double want = std::exp2(static_cast<double>(x));
  return std::fabs(static_cast<double>(exp2_poly(x)) - want) / want;
}

// Within 2e-4 relative everywhere on [-125, 0] (bf16, what the probabilities become, resolves
// 3.9e-3): a dense sweep, the integers and the half-integers (where the rounding to n flips).
TEST(Exp2Poly, RelativeErrorBelowTwoTenThousandthsOnTheSoftmaxRange) {
  double worst = 0;
  for (int i = 0; i <= 1250000; ++i) worst = std::fmax(worst, relative_error(-125.f * i / 1250000.f));
  for (int n = 0; n >= -125; --n) {
    worst = std::fmax(worst, relative_error(static_cast<float>(n)));
    worst = std::fmax(worst, relative_error(n - 0.5f));
    worst = std::fmax(worst, relative_error(std::nextafter(n - 0.5f, 0.f)));
    worst = std::fmax(worst, relative_error(std::nextafter(n - 0.5f, -1000.f)));
  }
  EXPECT_LT(worst, 2e-4);
}

// Masked scores (-inf) and anything below the clamp give a number too small for a row sum of at
// least 1 to see, and never a negative, infinite or NaN one (the exponent must not wrap).
TEST(Exp2Poly, MaskedScoresGiveNearZero) {
  for (const float x : {-std::numeric_limits<float>::infinity(), -1e30f, -1000.f, -200.f, -126.f, -126.4f}) {
    const float y = exp2_poly(x);
    EXPECT_TRUE(std::isfinite(y)) << x;
    EXPECT_GE(y, 0.f) << x;
    EXPECT_LT(y, 2e-38f) << x;
  }
}

// The top of the range: the row's maximum gives 1 (x = 0, and the tiny positive x that the
// scale-and-subtract can round to).
TEST(Exp2Poly, RowMaximumGivesOne) {
  EXPECT_NEAR(exp2_poly(0.f), 1.f, 1e-4);
  EXPECT_NEAR(exp2_poly(1e-7f), 1.f, 1e-4);
}

}  // namespace
}  // namespace hydra::kernels
