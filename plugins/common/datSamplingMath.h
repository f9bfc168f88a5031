// Per-element math of the DAT sampling ops, shared by the CPU kernels, the CUDA kernels and the
// TensorRT plugins (see plugins/README.md for the op contract). Everything here is plain C++ that
// g++ compiles as host code and nvcc as __host__ __device__ code.
//
// Semantics are those of F.grid_sample(mode='bilinear', padding_mode='zeros', align_corners=True):
// a normalised coordinate c in [-1, 1] maps to the pixel coordinate (c + 1) / 2 * (size - 1), and
// every corner outside the image contributes zero. Coordinates are always fp32, even for fp16 data.
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define DAT_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// always_inline: the CPU kernels compile these into each instruction-set layer's own code (cpu/cpuLayer.h), so no
// out-of-line copy of one layer is ever shared with another.
#define DAT_HD inline __attribute__((always_inline))
#else
#define DAT_HD inline
#endif

namespace dat
{

// Query-grid conventions of DATRelPosBias (attribute `convention`).
enum QueryConvention : int32_t
{
    kQueryPixelCenters = 0, // DAT:   ((i + 0.5) / H) * 2 - 1
    kQueryAlignCorners = 1, // DAT++: i / (H - 1) * 2 - 1
};

// The four bilinear corners of one sample point inside an H x W plane. Corners outside the plane
// get weight 0 and offset 0, so a consumer can always read all four without branching.
struct BilinearTap
{
    int32_t offset[4]; // y * W + x of (y0,x0), (y0,x1), (y1,x0), (y1,x1)
    float weight[4];
};

DAT_HD float unnormalizeAlignCorners(float coord, int32_t size)
{
    return (coord + 1.f) / 2.f * static_cast<float>(size - 1);
}

// floor() for |v| < 2^31 as truncation plus a correction: exact, and unlike floorf it vectorises
// without -fno-trapping-math.
DAT_HD int32_t floorToInt(float v)
{
    int32_t const truncated = static_cast<int32_t>(v);
    return truncated - (static_cast<float>(truncated) > v ? 1 : 0);
}

// (y, x) normalised to [-1, 1] -> the four taps. Branch-free, so loops over points vectorise: the pixel
// coordinate is first clamped to [-2, size + 1] (NaN -> -2), which keeps every outside point outside
// and the float -> int conversion in range.
DAT_HD BilinearTap bilinearTap(float y, float x, int32_t height, int32_t width)
{
    BilinearTap tap;
    // `v > lo ? v : lo` (not fmaxf) maps NaN to lo and compiles to a vector max.
    float iy = unnormalizeAlignCorners(y, height);
    float ix = unnormalizeAlignCorners(x, width);
    iy = iy > -2.f ? iy : -2.f;
    ix = ix > -2.f ? ix : -2.f;
    iy = iy < static_cast<float>(height) + 1.f ? iy : static_cast<float>(height) + 1.f;
    ix = ix < static_cast<float>(width) + 1.f ? ix : static_cast<float>(width) + 1.f;
    int32_t const y0 = floorToInt(iy);
    int32_t const x0 = floorToInt(ix);
    float const y0f = static_cast<float>(y0);
    float const x0f = static_cast<float>(x0);
    // Same weight formulas as ATen's grid_sampler_2d (distance to the opposite corner).
    float const wy0 = (y0f + 1.f) - iy;
    float const wy1 = iy - y0f;
    float const wx0 = (x0f + 1.f) - ix;
    float const wx1 = ix - x0f;
    // Inside-masks as 0/1 integers from one unsigned compare each (x in [0, n) <=> unsigned(x) < n):
    // selects, not branches, so loops over points vectorise.
    int32_t const y0In = static_cast<uint32_t>(y0) < static_cast<uint32_t>(height) ? 1 : 0;
    int32_t const y1In = static_cast<uint32_t>(y0 + 1) < static_cast<uint32_t>(height) ? 1 : 0;
    int32_t const x0In = static_cast<uint32_t>(x0) < static_cast<uint32_t>(width) ? 1 : 0;
    int32_t const x1In = static_cast<uint32_t>(x0 + 1) < static_cast<uint32_t>(width) ? 1 : 0;
    int32_t const in00 = y0In & x0In;
    int32_t const in01 = y0In & x1In;
    int32_t const in10 = y1In & x0In;
    int32_t const in11 = y1In & x1In;
    // Weights times 0/1 (they are finite here) and offsets masked to 0: selects without branches.
    tap.weight[0] = wy0 * wx0 * static_cast<float>(in00);
    tap.weight[1] = wy0 * wx1 * static_cast<float>(in01);
    tap.weight[2] = wy1 * wx0 * static_cast<float>(in10);
    tap.weight[3] = wy1 * wx1 * static_cast<float>(in11);
    int32_t const base = y0 * width + x0;
    tap.offset[0] = base & -in00;
    tap.offset[1] = (base + 1) & -in01;
    tap.offset[2] = (base + width) & -in10;
    tap.offset[3] = (base + width + 1) & -in11;
    return tap;
}

// Normalised query coordinate of pixel index i along an axis of `size` pixels.
DAT_HD float queryCoord(int32_t i, int32_t size, int32_t convention)
{
    if (convention == kQueryPixelCenters)
    {
        return (static_cast<float>(i) + 0.5f) / static_cast<float>(size) * 2.f - 1.f;
    }
    return static_cast<float>(i) / (static_cast<float>(size) - 1.f) * 2.f - 1.f;
}

// Taps into the bias table (Th x Tw) for query (qy, qx) and key position (py, px), all normalised:
// the table is sampled at the displacement (q - p) * 0.5, which stays inside [-1, 1] for in-range points.
DAT_HD BilinearTap relPosTap(float qy, float qx, float py, float px, int32_t tableH, int32_t tableW)
{
    return bilinearTap((qy - py) * 0.5f, (qx - px) * 0.5f, tableH, tableW);
}

// IEEE binary16 <-> binary32 on raw bits, for host code (CUDA code uses __half intrinsics instead).
DAT_HD float halfBitsToFloat(uint16_t h)
{
    uint32_t const sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1fu)
    {
        bits = sign | 0x7f800000u | (mantissa << 13); // inf / nan
    }
    else if (exponent != 0)
    {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    }
    else if (mantissa == 0)
    {
        bits = sign;
    }
    else
    {
        // subnormal half: renormalise
        exponent = 113u;
        while ((mantissa & 0x400u) == 0)
        {
            mantissa <<= 1;
            --exponent;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
    float f;
    __builtin_memcpy(&f, &bits, sizeof(f));
    return f;
}

// Round-to-nearest-even float -> half bits.
DAT_HD uint16_t floatToHalfBits(float f)
{
    uint32_t x;
    __builtin_memcpy(&x, &f, sizeof(x));
    uint32_t const sign = (x >> 16) & 0x8000u;
    uint32_t const absBits = x & 0x7fffffffu;
    if (absBits >= 0x7f800000u)
    {
        return static_cast<uint16_t>(sign | 0x7c00u | (absBits > 0x7f800000u ? 0x200u : 0u));
    }
    if (absBits >= 0x477ff000u) // rounds to >= 65520: overflow to inf
    {
        return static_cast<uint16_t>(sign | 0x7c00u);
    }
    if (absBits < 0x38800000u) // below the smallest normal half: subnormal or zero
    {
        if (absBits < 0x33000000u)
        {
            return static_cast<uint16_t>(sign);
        }
        uint32_t const exponent = absBits >> 23;
        uint32_t const mantissa = (absBits & 0x7fffffu) | 0x800000u;
        uint32_t const shift = 126u - exponent; // 14..24
        uint32_t half = mantissa >> shift;
        uint32_t const rest = mantissa & ((1u << shift) - 1u);
        uint32_t const halfway = 1u << (shift - 1u);
        if (rest > halfway || (rest == halfway && (half & 1u)))
        {
            ++half;
        }
        return static_cast<uint16_t>(sign | half);
    }
    uint32_t half = ((absBits - 0x38000000u) >> 13);
    uint32_t const rest = absBits & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u)))
    {
        ++half;
    }
    return static_cast<uint16_t>(sign | half);
}

} // namespace dat
