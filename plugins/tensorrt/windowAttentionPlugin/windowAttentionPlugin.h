// TensorRT IPluginV3 plugin DATWindowAttention (version "1", namespace "dat"); see plugins/README.md for the
// contract.
#pragma once

#include "../common/datPluginBase.h"

namespace dat
{
namespace trt
{

class WindowAttentionPlugin : public DatPluginBase
{
public:
    WindowAttentionPlugin(int32_t heads, int32_t window, int32_t shift, float scale);

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
    // Checks qkv / bias shapes against the attributes; dimensions of -1 (not known yet) pass.
    bool checkShapes(nvinfer1::Dims const& qkv, nvinfer1::Dims const& bias) const noexcept;

    int32_t mHeads;
    int32_t mWindow;
    int32_t mShift;
    float mScale;
};

class WindowAttentionPluginCreator : public DatPluginCreatorBase
{
public:
    WindowAttentionPluginCreator();

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
};

} // namespace trt
} // namespace dat
