// DATWindowAttention (contract: plugins/README.md): shapes and the per-token index math that the CPU,
// CUDA and TensorRT implementations share. __host__ __device__ under nvcc, plain inline under g++.
#pragma once

#include "datSamplingMath.h"

#include <stdint.h>

namespace dat
{

struct WindowAttentionDims
{
    int64_t batch, height, width, channels; // qkv is (batch, height, width, 3 * channels); out (.., channels)
    int64_t heads;                          // divides channels; head h owns channels [h * d, (h + 1) * d)
    int64_t window;                         // divides height and width; tokens = window * window
    int64_t shift;                          // 0 <= shift < window (cyclic shift of Swin's "S" blocks)
    int64_t biasWindows;                    // bias is (biasWindows, heads, tokens, tokens), 1 or windows per image
    float scale;                            // multiplies q . k

    DAT_HD int64_t tokens() const
    {
        return window * window;
    }
    DAT_HD int64_t headDim() const
    {
        return channels / heads;
    }
    DAT_HD int64_t windowCols() const
    {
        return width / window;
    }
    DAT_HD int64_t windowsPerImage() const
    {
        return (height / window) * (width / window);
    }
};

// Pixel (row-major index y * width + x) of token t of window n in the shifted map. Token (r, c) of the
// shifted map is pixel ((r + shift) % H, (c + shift) % W): the roll that Swin applies before and undoes
// after the attention, folded into the index. The output is written to the same pixel it was read from.
DAT_HD int64_t windowTokenPixel(WindowAttentionDims const& d, int64_t n, int64_t t)
{
    int64_t const r = (n / d.windowCols()) * d.window + t / d.window + d.shift;
    int64_t const c = (n % d.windowCols()) * d.window + t % d.window + d.shift;
    int64_t const y = r >= d.height ? r - d.height : r;
    int64_t const x = c >= d.width ? c - d.width : c;
    return y * d.width + x;
}

// Offset of bias[n or 0, h, 0, 0]: one bias for every window, or one per window of the image.
DAT_HD int64_t windowBiasOffset(WindowAttentionDims const& d, int64_t n, int64_t h)
{
    int64_t const window = d.biasWindows == 1 ? 0 : n;
    return (window * d.heads + h) * d.tokens() * d.tokens();
}

} // namespace dat
