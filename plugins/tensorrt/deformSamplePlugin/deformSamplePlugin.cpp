#include "deformSamplePlugin.h"

#include "../../cuda/datSamplingKernels.h"

#include <new>
#include <string>
#include <vector>

namespace dat
{
namespace trt
{
namespace
{
constexpr char const* kName = "DATDeformSample";
constexpr int32_t kInputX = 0;
constexpr int32_t kInputPos = 1;

// The attributes in order; without values for the creator's schema.
std::vector<nvinfer1::PluginField> attributeFields(int32_t const* groups = nullptr)
{
    return {intField("groups", groups)};
}
} // namespace

DeformSamplePlugin::DeformSamplePlugin(int32_t groups)
    : DatPluginBase(kName, attributeFields(&mGroups))
    , mGroups(groups)
{
}

nvinfer1::IPluginV3* DeformSamplePlugin::clone() noexcept
{
    return new (std::nothrow) DeformSamplePlugin(mGroups);
}

int32_t DeformSamplePlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || inputs[kInputX].nbDims != 4 || inputs[kInputPos].nbDims != 4)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "DATDeformSample needs x (B,C,H,W) and pos (B*g,Hk,Wk,2)");
        return -1;
    }
    // (B, C, Hk, Wk): batch and channels from x, the key grid from pos.
    outputs[0].nbDims = 4;
    outputs[0].d[0] = inputs[kInputX].d[0];
    outputs[0].d[1] = inputs[kInputX].d[1];
    outputs[0].d[2] = inputs[kInputPos].d[1];
    outputs[0].d[3] = inputs[kInputPos].d[2];
    return 0;
}

bool DeformSamplePlugin::supportsFormatCombination(
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
    // x and pos: fp32 or fp16 independently (coordinates are fp32 inside); output: x's dtype.
    return pos != 2 || desc.type == inOut[kInputX].desc.type;
}

int32_t DeformSamplePlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& x = inputDesc[kInputX].dims;
    nvinfer1::Dims const& pos = inputDesc[kInputPos].dims;
    if (mGroups < 1 || x.d[1] % mGroups != 0 || pos.d[0] != x.d[0] * mGroups || pos.d[3] != 2)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR,
            "DATDeformSample: pos must be (B*groups, Hk, Wk, 2) and C divisible by groups=" + std::to_string(mGroups));
        return -1;
    }
    DeformSampleDims const dims{x.d[0], x.d[1], x.d[2], x.d[3], mGroups, pos.d[1], pos.d[2]};
    cudaError_t const status = cuda::deformSample(dims, inputs[kInputX], toDType(inputDesc[kInputX].type),
        inputs[kInputPos], toDType(inputDesc[kInputPos].type), outputs[0], stream);
    if (status != cudaSuccess)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR,
            std::string("DATDeformSample kernel launch failed: ") + cudaGetErrorString(status));
        return -1;
    }
    return 0;
}

DeformSamplePluginCreator::DeformSamplePluginCreator()
    : DatPluginCreatorBase(kName, attributeFields())
{
}

nvinfer1::IPluginV3* DeformSamplePluginCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    int32_t groups = 0;
    if (!readIntField(fc, "groups", &groups) || groups < 1)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "DATDeformSample needs an int attribute groups >= 1");
        return nullptr;
    }
    return new (std::nothrow) DeformSamplePlugin(groups);
}

} // namespace trt
} // namespace dat
