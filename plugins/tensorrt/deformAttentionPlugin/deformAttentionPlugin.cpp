#include "deformAttentionPlugin.h"

#include "../../cuda/deformAttentionKernels.h"

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
constexpr char const* kName = "DATDeformAttention";
constexpr int32_t kInputQ = 0;
constexpr int32_t kInputK = 1;
constexpr int32_t kInputV = 2;
constexpr int32_t kInputTable = 3;
constexpr int32_t kInputPos = 4;
constexpr int32_t kNbInputs = 5;

// Both known and different.
bool differ(int64_t a, int64_t b)
{
    return known(a) && known(b) && a != b;
}

std::string shapeText(nvinfer1::Dims const& dims)
{
    std::string text = "(";
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        text += (i > 0 ? ", " : "") + std::to_string(dims.d[i]);
    }
    return text + ")";
}

// The attributes in order; without values for the creator's schema.
std::vector<nvinfer1::PluginField> attributeFields(int32_t const* heads = nullptr, int32_t const* groups = nullptr,
    int32_t const* convention = nullptr, float const* scale = nullptr)
{
    return {intField("heads", heads), intField("groups", groups),
        intField("convention", convention), floatField("scale", scale)};
}
} // namespace

DeformAttentionPlugin::DeformAttentionPlugin(int32_t heads, int32_t groups, int32_t convention, float scale)
    : DatPluginBase(kName, attributeFields(&mHeads, &mGroups, &mConvention, &mScale))
    , mHeads(heads)
    , mGroups(groups)
    , mConvention(convention)
    , mScale(scale)
{
}

nvinfer1::IPluginV3* DeformAttentionPlugin::clone() noexcept
{
    return new (std::nothrow) DeformAttentionPlugin(mHeads, mGroups, mConvention, mScale);
}

bool DeformAttentionPlugin::checkShapes(nvinfer1::Dims const* in) const noexcept
{
    nvinfer1::Dims const& q = in[kInputQ];
    nvinfer1::Dims const& k = in[kInputK];
    nvinfer1::Dims const& v = in[kInputV];
    nvinfer1::Dims const& table = in[kInputTable];
    nvinfer1::Dims const& pos = in[kInputPos];
    if (q.nbDims != 4 || k.nbDims != 3 || v.nbDims != 3 || table.nbDims != 3 || pos.nbDims != 4)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR,
            "DATDeformAttention needs q (B,H,W,C), k and v (B,Nk,C), table (heads,Th,Tw) and pos (B*groups,Hk,Wk,2)");
        return false;
    }
    int64_t const batch = q.d[0];
    int64_t const channels = q.d[3];
    std::string problem;
    if (known(channels) && channels % mHeads != 0)
    {
        problem = "heads=" + std::to_string(mHeads) + " does not divide q's C=" + std::to_string(channels);
    }
    else if (differ(k.d[0], batch) || differ(k.d[2], channels) || differ(v.d[0], batch) || differ(v.d[2], channels)
        || differ(v.d[1], k.d[1]))
    {
        problem = "k " + shapeText(k) + " and v " + shapeText(v) + " must both be (B, Nk, C) with q " + shapeText(q);
    }
    else if (differ(table.d[0], mHeads) || table.d[1] == 0 || table.d[2] == 0)
    {
        problem = "table " + shapeText(table) + " must be (heads=" + std::to_string(mHeads) + ", Th >= 1, Tw >= 1)";
    }
    else if (differ(pos.d[3], 2) || (known(batch) && differ(pos.d[0], batch * mGroups))
        || (known(pos.d[1]) && known(pos.d[2]) && differ(k.d[1], pos.d[1] * pos.d[2])))
    {
        problem = "pos " + shapeText(pos) + " must be (B*groups, Hk, Wk, 2) with B*groups=" + std::to_string(mGroups)
            + "*B and Hk*Wk = Nk of k " + shapeText(k);
    }
    if (!problem.empty())
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "DATDeformAttention: " + problem);
        return false;
    }
    return true;
}

int32_t DeformAttentionPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1 || in == nullptr)
    {
        return -1;
    }
    // Build time: what is already known (dynamic dimensions are -1) must fit the attributes.
    nvinfer1::Dims dims[kNbInputs];
    for (int32_t i = 0; i < kNbInputs; ++i)
    {
        dims[i] = in[i].desc.dims;
    }
    return checkShapes(dims) ? 0 : -1;
}

int32_t DeformAttentionPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1 || inputs[kInputQ].nbDims != 4)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "DATDeformAttention needs five inputs, q being (B,H,W,C)");
        return -1;
    }
    outputs[0] = inputs[kInputQ]; // (B, H, W, C): q's own expressions, so any batch works
    return 0;
}

bool DeformAttentionPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1 || pos < 0 || pos > kNbInputs)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    if (!linearFloatOrHalf(desc))
    {
        return false;
    }
    nvinfer1::DataType const data = inOut[kInputQ].desc.type;
    switch (pos)
    {
    case kInputQ: return true;                                                         // fp32 or fp16
    case kInputTable: return desc.type == data || desc.type == nvinfer1::DataType::kFLOAT; // T or fp32
    case kInputPos: return true;                                                       // fp32 or fp16, any T
    default: return desc.type == data;                                                 // k, v, output: T
    }
}

int32_t DeformAttentionPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    nvinfer1::Dims dims[kNbInputs];
    for (int32_t i = 0; i < kNbInputs; ++i)
    {
        dims[i] = inputDesc[i].dims;
    }
    if (!checkShapes(dims))
    {
        return -1;
    }
    nvinfer1::Dims const& q = dims[kInputQ];
    nvinfer1::Dims const& table = dims[kInputTable];
    nvinfer1::Dims const& pos = dims[kInputPos];
    DeformAttentionDims const d{q.d[0], q.d[1], q.d[2], q.d[3], pos.d[1], pos.d[2], mHeads, mGroups, table.d[1],
        table.d[2], mConvention, mScale};
    cudaError_t const status = cuda::deformAttention(d, inputs[kInputQ], inputs[kInputK], inputs[kInputV],
        toDType(inputDesc[kInputQ].type), inputs[kInputTable], toDType(inputDesc[kInputTable].type),
        inputs[kInputPos], toDType(inputDesc[kInputPos].type), outputs[0], stream);
    if (status != cudaSuccess)
    {
        std::string message = std::string("DATDeformAttention kernel launch failed: ") + cudaGetErrorString(status);
        if (status == cudaErrorInvalidValue)
        {
            message += " (a head's keys and values need " + std::to_string(cuda::deformAttentionSharedBytes(d))
                + " bytes of shared memory per block)";
        }
        logMessage(nvinfer1::ILogger::Severity::kERROR, message);
        return -1;
    }
    return 0;
}

DeformAttentionPluginCreator::DeformAttentionPluginCreator()
    : DatPluginCreatorBase(kName, attributeFields())
{
}

nvinfer1::IPluginV3* DeformAttentionPluginCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    int32_t heads = 0;
    int32_t groups = 0;
    int32_t convention = -1;
    float scale = 0.f;
    if (!readIntField(fc, "heads", &heads) || heads < 1)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "DATDeformAttention needs an int attribute heads >= 1");
        return nullptr;
    }
    if (!readIntField(fc, "groups", &groups) || groups < 1 || heads % groups != 0)
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR,
            "DATDeformAttention needs an int attribute groups >= 1 dividing heads=" + std::to_string(heads));
        return nullptr;
    }
    if (!readIntField(fc, "convention", &convention) || (convention != kQueryPixelCenters && convention != kQueryAlignCorners))
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR,
            "DATDeformAttention needs an int attribute convention, 0 (DAT) or 1 (DAT++)");
        return nullptr;
    }
    if (!readFloatField(fc, "scale", &scale) || !std::isfinite(scale))
    {
        logMessage(nvinfer1::ILogger::Severity::kERROR, "DATDeformAttention needs a finite float attribute scale");
        return nullptr;
    }
    return new (std::nothrow) DeformAttentionPlugin(heads, groups, convention, scale);
}

} // namespace trt
} // namespace dat
