// TensorRT IPluginV3 plugin DATDeformAttention (version "1", namespace "dat"); see plugins/README.md for the
// contract.
#pragma once

#include "../common/datPluginBase.h"

namespace dat
{
namespace trt
{

class DeformAttentionPlugin : public DatPluginBase
{
public:
    DeformAttentionPlugin(int32_t heads, int32_t groups, int32_t convention, float scale);

    nvinfer1::IPluginV3* clone() noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

private:
    // Checks the shapes of q, k, v, table and pos against each other and the attributes; dimensions of -1
    // (not known yet) pass.
    bool checkShapes(nvinfer1::Dims const* in) const noexcept;

    int32_t mHeads;
    int32_t mGroups;
    int32_t mConvention;
    float mScale;
};

class DeformAttentionPluginCreator : public DatPluginCreatorBase
{
public:
    DeformAttentionPluginCreator();

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
};

} // namespace trt
} // namespace dat
