// TensorRT IPluginV3 plugin DATRelPosBias (version "1", namespace "dat"); see README.md here and
// plugins/README.md for the contract.
#pragma once

#include "../common/datPluginBase.h"

namespace dat
{
namespace trt
{

class RelPosBiasPlugin : public DatPluginBase
{
public:
    RelPosBiasPlugin(int32_t groups, int32_t convention);

    nvinfer1::IPluginV3* clone() noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

private:
    int32_t mGroups;
    int32_t mConvention;
};

class RelPosBiasPluginCreator : public DatPluginCreatorBase
{
public:
    RelPosBiasPluginCreator();

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
};

} // namespace trt
} // namespace dat
