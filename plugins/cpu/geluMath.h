// The exact (erf) GELU in the AVX-512 / AVX2 vector layer, shared by DATBiasGelu and DATGemm's GELU epilogue:
// GELU(z) = z (1 + erf(z / sqrt 2)) / 2 with erf(u) = u P(u^2) / Q(u^2), a rational fit of ours (degrees 6 and 4)
// to erf on [0, 3.92]: at most 3.7e-7 from erf when evaluated in fp32 (an ulp of 1 is 1.2e-7). u is clamped to
// +-3.92 (erf(3.92) = 1 - 1.3e-8) and erf to [-1, 1]; below z = -3.92 sqrt 2 the output is exactly 0 (|GELU| <
// 8.4e-8 there), so that 1 + erf's rounding is never multiplied by a large |z|.
// Accuracy against GELU in fp64 (z in [-12, 12], 12.8M points, AVX2): within 1.2e-6 everywhere (1.18e-6 at most,
// at most 2.6 ulp where |GELU| > 1); in the negative tail (z in [-5.5, -3]) 1 + erf cancels, with up to 1.0e-6
// absolute error there (PyTorch's fp32 GELU on the same grid and CPU: 1.2e-6). Computing 1 + erf as
// erfc(-u) = exp(-u^2) R(-u) removes that and costs an exp: 1.34-1.53x the time of this form per call on DAT-T's
// MLP shapes (AVX2, two A/B runs), where this one is near memory speed.
#pragma once

#include "cpuLayer.h"

#include "attentionVectorMath.h"

#include <algorithm>

namespace dat
{
namespace cpu
{
namespace DAT_CPU_LAYER
{
namespace geluMath
{

constexpr float kInvSqrt2 = 0.707106781186547524f;
constexpr float kErfClamp = 3.92f;
constexpr float kZeroBelow = -5.54371716f; // -kErfClamp * sqrt 2
constexpr float kP0 = 1.128378749e+00f;    // numerator: kP0 + kP1 t + ... + kP6 t^6, t = u^2
constexpr float kP1 = 2.061631978e-01f;
constexpr float kP2 = 5.140385404e-02f;
constexpr float kP3 = 3.974965774e-03f;
constexpr float kP4 = 1.490352006e-04f;
constexpr float kP5 = -1.994436388e-06f;
constexpr float kP6 = 1.991942611e-08f;
constexpr float kQ1 = 5.160361528e-01f; // denominator: 1 + kQ1 t + ... + kQ4 t^4
constexpr float kQ2 = 1.175848916e-01f;
constexpr float kQ3 = 1.489343587e-02f;
constexpr float kQ4 = 1.024622237e-03f;

inline FloatVec vGelu(FloatVec z)
{
    FloatVec const u = vClamp(vMul(z, vSet(kInvSqrt2)), -kErfClamp, kErfClamp);
    FloatVec const t = vMul(u, u);
    FloatVec p = vFma(vSet(kP6), t, vSet(kP5));
    p = vFma(p, t, vSet(kP4));
    p = vFma(p, t, vSet(kP3));
    p = vFma(p, t, vSet(kP2));
    p = vFma(p, t, vSet(kP1));
    p = vFma(p, t, vSet(kP0));
    FloatVec q = vFma(vSet(kQ4), t, vSet(kQ3));
    q = vFma(q, t, vSet(kQ2));
    q = vFma(q, t, vSet(kQ1));
    q = vFma(q, t, vSet(1.f));
    FloatVec const erf = vClamp(vDiv(vMul(u, p), q), -1.f, 1.f);
    FloatVec const half = vMul(z, vSet(0.5f));
    return vSelectBelow(z, kZeroBelow, vZero(), vFma(half, erf, half)); // a NaN z stays NaN
}

// The scalar form of vGelu, for row tails shorter than a vector.
inline float gelu(float z)
{
    float const u = std::min(std::max(z * kInvSqrt2, -kErfClamp), kErfClamp);
    float const t = u * u;
    float const p = (((((kP6 * t + kP5) * t + kP4) * t + kP3) * t + kP2) * t + kP1) * t + kP0;
    float const q = (((kQ4 * t + kQ3) * t + kQ2) * t + kQ1) * t + 1.f;
    float const erf = std::min(std::max(u * p / q, -1.f), 1.f);
    float const half = 0.5f * z;
    return z < kZeroBelow ? 0.f : half * erf + half;
}

} // namespace geluMath
} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
