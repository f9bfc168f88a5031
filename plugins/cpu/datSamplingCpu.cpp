#include "datSamplingCpu.h"

#include "../common/datSamplingMath.h"
#include "threadPool.h"

#include <algorithm>
#include <vector>

namespace dat
{
namespace cpu
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
                for (int64_t k = 0; k < keys; ++k)
                {
                    BilinearTap const t = relPosTap(qy[static_cast<size_t>(qi)], qx[static_cast<size_t>(qj)],
                        posY[static_cast<size_t>(k)], posX[static_cast<size_t>(k)], tableH, tableW);
                    for (int corner = 0; corner < 4; ++corner)
                    {
                        off[static_cast<size_t>(corner * keys + k)] = t.offset[corner];
                        w[static_cast<size_t>(corner * keys + k)] = t.weight[corner];
                    }
                }
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

} // namespace cpu
} // namespace dat
