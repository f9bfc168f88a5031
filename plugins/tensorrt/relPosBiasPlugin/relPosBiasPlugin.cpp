#include "relPosBiasPlugin.h"

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
constexpr char const* kName = "DATRelPosBias";
constexpr int32_t kInputTable = 0;
constexpr int32_t kInputPos = 1;
constexpr int32_t kInputX = 2; // only its shape is read

// The attributes in order; without values for the creator's schema.
std::vector<nvinfer1::PluginField> attributeFields(int32_t const* groups = nullptr, int32_t const* convention = nullptr)
{
    return {intField("groups", groups), intField("convention", convention)};
}
} // namespace

RelPosBiasPlugin::RelPosBiasPlugin(int32_t groups, int32_t convention)
    : DatPluginBase(kName, attributeFields(&mGroups, &mConvention))
    , mGroups(groups)
    , mConvention(convention)
{
}

nvinfer1::IPluginV3* RelPosBiasPlugin::clone() noexcept
{
    return new (std::nothrow) RelPosBiasPlugin(mGroups, mConvention);
}

int32_t RelPosBiasPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != 3 || nbOutputs != 1 || inputs[kInputTable].nbDims != 3 || inputs[kInputPos].nbDims != 4
        || inputs[kInputX].nbDims != 4)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR,
            "DATRelPosBias needs table (h,Th,Tw), pos (B*g,Hk,Wk,2) and x (B,C,H,W)");
        return -1;
    }
    // (B * heads, H * W, Hk * Wk)
    auto const prod = nvinfer1::DimensionOperation::kPROD;
    outputs[0].nbDims = 3;
    outputs[0].d[0] = exprBuilder.operation(prod, *inputs[kInputX].d[0], *inputs[kInputTable].d[0]);
    outputs[0].d[1] = exprBuilder.operation(prod, *inputs[kInputX].d[2], *inputs[kInputX].d[3]);
    outputs[0].d[2] = exprBuilder.operation(prod, *inputs[kInputPos].d[1], *inputs[kInputPos].d[2]);
    return 0;
}

bool RelPosBiasPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != 3 || nbOutputs != 1 || pos < 0 || pos > 3)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    if (!linearFloatOrHalf(desc))
    {
        return false;
    }
    // table, pos, x: fp32 or fp16 independently; output: the table's dtype.
    return pos != 3 || desc.type == inOut[kInputTable].desc.type;
}

int32_t RelPosBiasPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& table = inputDesc[kInputTable].dims;
    nvinfer1::Dims const& pos = inputDesc[kInputPos].dims;
    nvinfer1::Dims const& x = inputDesc[kInputX].dims;
    if (mGroups < 1 || table.d[0] % mGroups != 0 || pos.d[0] != x.d[0] * mGroups || pos.d[3] != 2)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR,
            "DATRelPosBias: pos must be (B*groups, Hk, Wk, 2) and heads divisible by groups="
                + std::to_string(mGroups));
        return -1;
    }
    RelPosBiasDims const dims{x.d[0], table.d[0], table.d[1], table.d[2], mGroups, pos.d[1], pos.d[2], x.d[2], x.d[3],
        mConvention};
    cudaError_t const status = cuda::relPosBias(dims, inputs[kInputTable], toDType(inputDesc[kInputTable].type),
        inputs[kInputPos], toDType(inputDesc[kInputPos].type), outputs[0], stream);
    if (status != cudaSuccess)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR,
            std::string("DATRelPosBias kernel launch failed: ") + cudaGetErrorString(status));
        return -1;
    }
    return 0;
}

RelPosBiasPluginCreator::RelPosBiasPluginCreator()
    : DatPluginCreatorBase(kName, attributeFields())
{
}

nvinfer1::IPluginV3* RelPosBiasPluginCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    int32_t groups = 0;
    int32_t convention = -1;
    if (!readIntField(fc, "groups", &groups) || groups < 1)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "DATRelPosBias needs an int attribute groups >= 1");
        return nullptr;
    }
    if (!readIntField(fc, "convention", &convention) || (convention != 0 && convention != 1))
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR,
            "DATRelPosBias needs an int attribute convention: 0 (DAT pixel centres) or 1 (DAT++ align corners)");
        return nullptr;
    }
    return new (std::nothrow) RelPosBiasPlugin(groups, convention);
}

} // namespace trt
} // namespace dat
