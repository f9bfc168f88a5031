#include "windowAttentionPlugin.h"

#include "../../cuda/windowAttentionKernels.h"

#include <cmath>
#include <new>
#include <string>
#include <vector>

namespace dat
{
namespace trt
{
namespace
{
constexpr char const* kName = "DATWindowAttention";
constexpr int32_t kInputQkv = 0;
constexpr int32_t kInputBias = 1;

// The attributes in order; without values for the creator's schema.
std::vector<nvinfer1::PluginField> attributeFields(int32_t const* heads = nullptr, int32_t const* window = nullptr,
    int32_t const* shift = nullptr, float const* scale = nullptr)
{
    return {intField("heads", heads), intField("window", window), intField("shift", shift), floatField("scale", scale)};
}
} // namespace

WindowAttentionPlugin::WindowAttentionPlugin(int32_t heads, int32_t window, int32_t shift, float scale)
    : DatPluginBase(kName, attributeFields(&mHeads, &mWindow, &mShift, &mScale))
    , mHeads(heads)
    , mWindow(window)
    , mShift(shift)
    , mScale(scale)
{
}

nvinfer1::IPluginV3* WindowAttentionPlugin::clone() noexcept
{
    return new (std::nothrow) WindowAttentionPlugin(mHeads, mWindow, mShift, mScale);
}

bool WindowAttentionPlugin::checkShapes(nvinfer1::Dims const& qkv, nvinfer1::Dims const& bias) const noexcept
{
    if (qkv.nbDims != 4 || bias.nbDims != 4)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "DATWindowAttention needs qkv (B,H,W,3C) and bias (Nb,heads,T,T)");
        return false;
    }
    int64_t const height = qkv.d[1];
    int64_t const width = qkv.d[2];
    int64_t const tokens = static_cast<int64_t>(mWindow) * mWindow;
    std::string problem;
    if (known(qkv.d[3]) && (qkv.d[3] % 3 != 0 || (qkv.d[3] / 3) % mHeads != 0))
    {
        problem = "qkv's last dimension " + std::to_string(qkv.d[3]) + " is not 3 * C with C divisible by heads="
            + std::to_string(mHeads);
    }
    else if ((known(height) && height % mWindow != 0) || (known(width) && width % mWindow != 0))
    {
        problem = "window=" + std::to_string(mWindow) + " does not divide H=" + std::to_string(height)
            + " and W=" + std::to_string(width);
    }
    else if ((known(bias.d[1]) && bias.d[1] != mHeads) || (known(bias.d[2]) && bias.d[2] != tokens)
        || (known(bias.d[3]) && bias.d[3] != tokens))
    {
        problem = "bias must be (Nb, heads=" + std::to_string(mHeads) + ", " + std::to_string(tokens) + ", "
            + std::to_string(tokens) + ")";
    }
    else if (known(bias.d[0]) && bias.d[0] != 1 && known(height) && known(width)
        && bias.d[0] != (height / mWindow) * (width / mWindow))
    {
        problem = "bias's first dimension " + std::to_string(bias.d[0]) + " is neither 1 nor the "
            + std::to_string((height / mWindow) * (width / mWindow)) + " windows per image";
    }
    if (!problem.empty())
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "DATWindowAttention: " + problem);
        return false;
    }
    return true;
}

int32_t WindowAttentionPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || in == nullptr)
    {
        return -1;
    }
    // Build time: what is already known (dynamic dimensions are -1) must fit the attributes.
    return checkShapes(in[kInputQkv].desc.dims, in[kInputBias].desc.dims) ? 0 : -1;
}

int32_t WindowAttentionPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || inputs[kInputQkv].nbDims != 4 || inputs[kInputBias].nbDims != 4)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "DATWindowAttention needs qkv (B,H,W,3C) and bias (Nb,heads,T,T)");
        return -1;
    }
    // (B, H, W, C) with C = qkv's last dimension / 3.
    nvinfer1::IDimensionExpr const* three = exprBuilder.constant(3);
    nvinfer1::IDimensionExpr const* channels = three == nullptr
        ? nullptr
        : exprBuilder.operation(nvinfer1::DimensionOperation::kFLOOR_DIV, *inputs[kInputQkv].d[3], *three);
    if (channels == nullptr)
    {
        return -1;
    }
    outputs[0].nbDims = 4;
    outputs[0].d[0] = inputs[kInputQkv].d[0];
    outputs[0].d[1] = inputs[kInputQkv].d[1];
    outputs[0].d[2] = inputs[kInputQkv].d[2];
    outputs[0].d[3] = channels;
    return 0;
}

bool WindowAttentionPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || pos < 0 || pos > 2)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    if (!linearFloatOrHalf(desc))
    {
        return false;
    }
    nvinfer1::DataType const data = inOut[kInputQkv].desc.type;
    switch (pos)
    {
    case kInputQkv: return true;                                                      // fp32 or fp16
    case kInputBias: return desc.type == data || desc.type == nvinfer1::DataType::kFLOAT; // T or fp32
    default: return desc.type == data;                                                // output: T
    }
}

int32_t WindowAttentionPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& qkv = inputDesc[kInputQkv].dims;
    nvinfer1::Dims const& bias = inputDesc[kInputBias].dims;
    if (!checkShapes(qkv, bias))
    {
        return -1;
    }
    WindowAttentionDims const dims{qkv.d[0], qkv.d[1], qkv.d[2], qkv.d[3] / 3, mHeads, mWindow, mShift, bias.d[0],
        mScale};
    cudaError_t const status = cuda::windowAttention(dims, inputs[kInputQkv], toDType(inputDesc[kInputQkv].type),
        inputs[kInputBias], toDType(inputDesc[kInputBias].type), outputs[0], stream);
    if (status != cudaSuccess)
    {
        std::string message = std::string("DATWindowAttention kernel launch failed: ") + cudaGetErrorString(status);
        if (status == cudaErrorInvalidValue)
        {
            message += " (a window's q, k and v need " + std::to_string(cuda::windowAttentionSharedBytes(dims))
                + " bytes of shared memory per block)";
        }
        logMessage(nvinfer1::ILogger::Severity::kERROR, message);
        return -1;
    }
    return 0;
}

WindowAttentionPluginCreator::WindowAttentionPluginCreator()
    : DatPluginCreatorBase(kName, attributeFields())
{
}

nvinfer1::IPluginV3* WindowAttentionPluginCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    int32_t heads = 0;
    int32_t window = 0;
    int32_t shift = -1;
    float scale = 0.f;
    if (!readIntField(fc, "heads", &heads) || heads < 1)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "DATWindowAttention needs an int attribute heads >= 1");
        return nullptr;
    }
    if (!readIntField(fc, "window", &window) || window < 1)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "DATWindowAttention needs an int attribute window >= 1");
        return nullptr;
    }
    if (!readIntField(fc, "shift", &shift) || shift < 0 || shift >= window)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR,
            "DATWindowAttention needs an int attribute shift with 0 <= shift < window=" + std::to_string(window));
        return nullptr;
    }
    if (!readFloatField(fc, "scale", &scale) || !std::isfinite(scale))
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "DATWindowAttention needs a finite float attribute scale");
        return nullptr;
    }
    return new (std::nothrow) WindowAttentionPlugin(heads, window, shift, scale);
}

} // namespace trt
} // namespace dat
