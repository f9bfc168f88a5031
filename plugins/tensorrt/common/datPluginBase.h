// What the DAT TensorRT plugins share: the IPluginV3 capability plumbing, version "1" and
// namespace "dat", dtype mapping, integer and float plugin fields, and the logger that setLoggerFinder installs.
#pragma once

#include "../../common/datSamplingTypes.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

namespace dat
{
namespace trt
{

constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "dat";

// Keeps the first logger finder TensorRT hands to the library's setLoggerFinder entry point.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

// Logs through the logger TensorRT handed to setLoggerFinder (silent before that).
void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;

inline bool isSupportedData(nvinfer1::DataType type)
{
    return type == nvinfer1::DataType::kFLOAT || type == nvinfer1::DataType::kHALF;
}

inline DType toDType(nvinfer1::DataType type)
{
    return type == nvinfer1::DataType::kHALF ? DType::kFloat16 : DType::kFloat32;
}

// Reads int field `name` from fc into *value; true if present and well-formed. A field of another
// type or length is reported and treated as absent.
bool readIntField(nvinfer1::PluginFieldCollection const* fc, char const* name, int32_t* value) noexcept;

// Reads float field `name` (one kFLOAT32 value) from fc into *value, like readIntField.
bool readFloatField(nvinfer1::PluginFieldCollection const* fc, char const* name, float* value) noexcept;

// IPluginV3 with all three capabilities (core, build, runtime); a subclass adds the op.
class DatPluginBase : public nvinfer1::IPluginV3,
                      public nvinfer1::IPluginV3OneCore,
                      public nvinfer1::IPluginV3OneBuild,
                      public nvinfer1::IPluginV3OneRuntime
{
public:
    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;

    // IPluginV3OneCore
    char const* getPluginVersion() const noexcept override
    {
        return kPluginVersion;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kPluginNamespace;
    }

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* /*in*/, int32_t /*nbInputs*/,
        nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept override
    {
        return 0;
    }
    // The output has the dtype of input 0 (x / table), as strong typing requires.
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getNbOutputs() const noexcept override
    {
        return 1;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* /*in*/, int32_t /*nbInputs*/,
        nvinfer1::PluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept override
    {
        return 0; // everything enqueue needs is in its tensor descriptors
    }
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override
    {
        return clone();
    }

protected:
    // Linear layout, fp32 or fp16.
    static bool linearFloatOrHalf(nvinfer1::PluginTensorDesc const& desc)
    {
        return desc.format == nvinfer1::TensorFormat::kLINEAR && isSupportedData(desc.type);
    }
};

} // namespace trt
} // namespace dat
