#include "cpuLayer.h" // first: the instruction-set layer of this compilation

#include "datSamplingCpu.h"

#include "../common/datSamplingMath.h"
#include "threadPool.h"

#include <algorithm>
#include <vector>

namespace dat
{
namespace cpu
{
namespace DAT_CPU_LAYER
{
namespace
{

// Channel block of DATDeformSample: a unit of parallel work, sized so the transposed block of x stays
// in cache and the per-point inner loop over channels is long enough to vectorise.
constexpr int64_t kChannelBlock = 64;

inline float loadAsFloat(void const* base, DType type, int64_t index)
{
    if (type == DType::kFloat32)
    {
        return static_cast<float const*>(base)[index];
    }
    return halfBitsToFloat(static_cast<uint16_t const*>(base)[index]);
}

inline void storeFromFloat(void* base, DType type, int64_t index, float value)
{
    if (type == DType::kFloat32)
    {
        static_cast<float*>(base)[index] = value;
    }
    else
    {
        static_cast<uint16_t*>(base)[index] = floatToHalfBits(value);
    }
}

// acc[c] = sum_k w[k] * rows[k][c]; kept free of aliasing so g++ vectorises it.
inline void blendRows(float* __restrict__ acc, float const* __restrict__ r0, float const* __restrict__ r1,
    float const* __restrict__ r2, float const* __restrict__ r3, float w0, float w1, float w2, float w3, int64_t n)
{
    for (int64_t c = 0; c < n; ++c)
    {
        acc[c] = w0 * r0[c] + w1 * r1[c] + w2 * r2[c] + w3 * r3[c];
    }
}

// Taps of one query against all keys, as four planes of offsets and weights (corner-major), in a loop
// the compiler vectorises.
__attribute__((noinline)) void computeRelPosTaps(float qy, float qx, float const* __restrict__ posY, float const* __restrict__ posX, int64_t keys,
    int32_t tableH, int32_t tableW, int32_t* off, float* w)
{
    // One restrict pointer per plane (and no inlining, which loses them): otherwise the compiler cannot
    // prove the planes disjoint and leaves the loop scalar.
    int32_t* __restrict__ off0 = off;
    int32_t* __restrict__ off1 = off + keys;
    int32_t* __restrict__ off2 = off + 2 * keys;
    int32_t* __restrict__ off3 = off + 3 * keys;
    float* __restrict__ w0 = w;
    float* __restrict__ w1 = w + keys;
    float* __restrict__ w2 = w + 2 * keys;
    float* __restrict__ w3 = w + 3 * keys;
    int32_t const n = static_cast<int32_t>(keys);
    // g++'s cost model leaves this loop scalar on its own; it is branch-free, so ask for SIMD explicitly.
#pragma omp simd
    for (int32_t k = 0; k < n; ++k)
    {
        BilinearTap const t = relPosTap(qy, qx, posY[k], posX[k], tableH, tableW);
        off0[k] = t.offset[0];
        off1[k] = t.offset[1];
        off2[k] = t.offset[2];
        off3[k] = t.offset[3];
        w0[k] = t.weight[0];
        w1[k] = t.weight[1];
        w2[k] = t.weight[2];
        w3[k] = t.weight[3];
    }
}

} // namespace

void deformSample(DeformSampleDims const& d, void const* x, DType xType, void const* pos, DType posType, void* out)
{
    int64_t const groupChannels = d.channels / d.groups;
    int64_t const plane = d.height * d.width;
    int64_t const points = d.keyH * d.keyW;
    int64_t const blocksPerGroup = (groupChannels + kChannelBlock - 1) / kChannelBlock;
    int64_t const units = d.batch * d.groups * blocksPerGroup;
    int32_t const height = static_cast<int32_t>(d.height);
    int32_t const width = static_cast<int32_t>(d.width);
    // The transpose reads the whole plane; it pays only when the points read a good part of it.
    bool const transpose = 4 * points >= plane;

    parallelFor(units, 1, [&](int64_t begin, int64_t end) {
        std::vector<float> xT;       // (plane, block): x transposed to channels-last
        std::vector<float> sampled;  // (points, block)
        std::vector<BilinearTap> taps(static_cast<size_t>(points));
        int64_t tapsFor = -1;
        for (int64_t unit = begin; unit < end; ++unit)
        {
            int64_t const image = unit / blocksPerGroup; // b * groups + g
            int64_t const block = unit % blocksPerGroup;
            int64_t const b = image / d.groups;
            int64_t const g = image % d.groups;
            int64_t const c0 = block * kChannelBlock;
            int64_t const nc = std::min(kChannelBlock, groupChannels - c0);
            int64_t const channelBase = b * d.channels + g * groupChannels + c0; // first (b, c) plane

            if (tapsFor != image)
            {
                int64_t const posBase = image * points * 2;
                for (int64_t p = 0; p < points; ++p)
                {
                    float const py = loadAsFloat(pos, posType, posBase + 2 * p);
                    float const px = loadAsFloat(pos, posType, posBase + 2 * p + 1);
                    taps[static_cast<size_t>(p)] = bilinearTap(py, px, height, width);
                }
                tapsFor = image;
            }

            if (!transpose)
            {
                // Few points on a large map: gather the taps straight from each channel plane.
                for (int64_t c = 0; c < nc; ++c)
                {
                    int64_t const src = (channelBase + c) * plane;
                    int64_t const dst = (channelBase + c) * points;
                    for (int64_t p = 0; p < points; ++p)
                    {
                        BilinearTap const& t = taps[static_cast<size_t>(p)];
                        float const value = t.weight[0] * loadAsFloat(x, xType, src + t.offset[0])
                            + t.weight[1] * loadAsFloat(x, xType, src + t.offset[1])
                            + t.weight[2] * loadAsFloat(x, xType, src + t.offset[2])
                            + t.weight[3] * loadAsFloat(x, xType, src + t.offset[3]);
                        storeFromFloat(out, xType, dst + p, value);
                    }
                }
                continue;
            }
            // Many points: transpose the block to channels-last once, then every point blends four
            // contiguous channel rows (a vectorised inner loop over channels).
            xT.resize(static_cast<size_t>(plane * nc));
            sampled.resize(static_cast<size_t>(points * nc));
            for (int64_t c = 0; c < nc; ++c)
            {
                int64_t const src = (channelBase + c) * plane;
                for (int64_t i = 0; i < plane; ++i)
                {
                    xT[static_cast<size_t>(i * nc + c)] = loadAsFloat(x, xType, src + i);
                }
            }
            float const* xt = xT.data();
            for (int64_t p = 0; p < points; ++p)
            {
                BilinearTap const& t = taps[static_cast<size_t>(p)];
                blendRows(sampled.data() + p * nc, xt + t.offset[0] * nc, xt + t.offset[1] * nc,
                    xt + t.offset[2] * nc, xt + t.offset[3] * nc, t.weight[0], t.weight[1], t.weight[2],
                    t.weight[3], nc);
            }
            for (int64_t c = 0; c < nc; ++c)
            {
                int64_t const dst = (channelBase + c) * points;
                for (int64_t p = 0; p < points; ++p)
                {
                    storeFromFloat(out, xType, dst + p, sampled[static_cast<size_t>(p * nc + c)]);
                }
            }
        }
    });
}

void relPosBias(RelPosBiasDims const& d, void const* table, DType tableType, void const* pos, DType posType, void* out)
{
    int64_t const headsPerGroup = d.heads / d.groups;
    int64_t const tablePlane = d.tableH * d.tableW;
    int64_t const keys = d.keyH * d.keyW;
    int64_t const queries = d.queryH * d.queryW;
    int32_t const tableH = static_cast<int32_t>(d.tableH);
    int32_t const tableW = static_cast<int32_t>(d.tableW);

    // The table is tiny (heads x ~27 x 27); one fp32 copy serves every thread.
    std::vector<float> tableF(static_cast<size_t>(d.heads * tablePlane));
    for (size_t i = 0; i < tableF.size(); ++i)
    {
        tableF[i] = loadAsFloat(table, tableType, static_cast<int64_t>(i));
    }

    // Query coordinates of one axis, computed once (fp32, as in the contract).
    std::vector<float> qy(static_cast<size_t>(d.queryH)), qx(static_cast<size_t>(d.queryW));
    for (int64_t i = 0; i < d.queryH; ++i)
    {
        qy[static_cast<size_t>(i)] = queryCoord(static_cast<int32_t>(i), static_cast<int32_t>(d.queryH), d.convention);
    }
    for (int64_t i = 0; i < d.queryW; ++i)
    {
        qx[static_cast<size_t>(i)] = queryCoord(static_cast<int32_t>(i), static_cast<int32_t>(d.queryW), d.convention);
    }

    // Work unit: one (image-group, query row); the taps of a query are shared by the group's heads.
    int64_t const units = d.batch * d.groups * d.queryH;
    parallelFor(units, 1, [&](int64_t begin, int64_t end) {
        std::vector<float> posY(static_cast<size_t>(keys)), posX(static_cast<size_t>(keys));
        std::vector<int32_t> off(static_cast<size_t>(4 * keys));
        std::vector<float> w(static_cast<size_t>(4 * keys));
        std::vector<float> row(static_cast<size_t>(keys));
        int64_t posFor = -1;
        for (int64_t unit = begin; unit < end; ++unit)
        {
            int64_t const image = unit / d.queryH; // b * groups + g
            int64_t const qi = unit % d.queryH;
            int64_t const b = image / d.groups;
            int64_t const g = image % d.groups;
            if (posFor != image)
            {
                int64_t const posBase = image * keys * 2;
                for (int64_t k = 0; k < keys; ++k)
                {
                    posY[static_cast<size_t>(k)] = loadAsFloat(pos, posType, posBase + 2 * k);
                    posX[static_cast<size_t>(k)] = loadAsFloat(pos, posType, posBase + 2 * k + 1);
                }
                posFor = image;
            }
            for (int64_t qj = 0; qj < d.queryW; ++qj)
            {
                int64_t const q = qi * d.queryW + qj;
                computeRelPosTaps(qy[static_cast<size_t>(qi)], qx[static_cast<size_t>(qj)], posY.data(), posX.data(),
                    keys, tableH, tableW, off.data(), w.data());
                int32_t const* __restrict__ o0 = off.data();
                int32_t const* __restrict__ o1 = o0 + keys;
                int32_t const* __restrict__ o2 = o1 + keys;
                int32_t const* __restrict__ o3 = o2 + keys;
                float const* __restrict__ w0 = w.data();
                float const* __restrict__ w1 = w0 + keys;
                float const* __restrict__ w2 = w1 + keys;
                float const* __restrict__ w3 = w2 + keys;
                for (int64_t hl = 0; hl < headsPerGroup; ++hl)
                {
                    int64_t const head = g * headsPerGroup + hl;
                    float const* __restrict__ t = tableF.data() + head * tablePlane;
                    int64_t const dst = ((b * d.heads + head) * queries + q) * keys;
                    if (tableType == DType::kFloat32)
                    {
                        float* __restrict__ o = static_cast<float*>(out) + dst;
                        for (int64_t k = 0; k < keys; ++k)
                        {
                            o[k] = w0[k] * t[o0[k]] + w1[k] * t[o1[k]] + w2[k] * t[o2[k]] + w3[k] * t[o3[k]];
                        }
                    }
                    else
                    {
                        float* __restrict__ r = row.data();
                        for (int64_t k = 0; k < keys; ++k)
                        {
                            r[k] = w0[k] * t[o0[k]] + w1[k] * t[o1[k]] + w2[k] * t[o2[k]] + w3[k] * t[o3[k]];
                        }
                        uint16_t* o = static_cast<uint16_t*>(out) + dst;
                        for (int64_t k = 0; k < keys; ++k)
                        {
                            o[k] = floatToHalfBits(r[k]);
                        }
                    }
                }
            }
        }
    });
}

} // namespace DAT_CPU_LAYER
} // namespace cpu
} // namespace dat
