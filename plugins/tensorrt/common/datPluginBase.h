// What the DAT TensorRT plugins share: the IPluginV3 capability plumbing, the creator's name / version "1" /
// namespace "dat" / field schema, dtype mapping, integer and float plugin fields, and the logger that
// setLoggerFinder installs.
#pragma once

#include "../../common/datSamplingTypes.h"
#include "datPluginFields.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

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

// Whether a dimension is known: TensorRT passes -1 for those not known at build time.
inline bool known(int64_t dim)
{
    return dim >= 0;
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
    DatPluginBase(DatPluginBase const&) = delete; // the fields point into the plugin
    DatPluginBase& operator=(DatPluginBase const&) = delete;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override
    {
        return mName;
    }
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
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        return mFields.collection();
    }

protected:
    // name: the plugin's name; fields: its attributes, pointing at the subclass's members (their storage
    // exists before the subclass's constructor runs, and they are read only when serialised).
    DatPluginBase(char const* name, std::vector<nvinfer1::PluginField> fields)
        : mName(name)
        , mFields(std::move(fields))
    {
    }

    // Linear layout, fp32 or fp16.
    static bool linearFloatOrHalf(nvinfer1::PluginTensorDesc const& desc)
    {
        return desc.format == nvinfer1::TensorFormat::kLINEAR && isSupportedData(desc.type);
    }

private:
    char const* mName;
    PluginFields mFields;
};

// A creator's name, version, namespace and field schema; a subclass adds createPlugin.
class DatPluginCreatorBase : public nvinfer1::IPluginCreatorV3One
{
public:
    char const* getPluginName() const noexcept override
    {
        return mName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return kPluginVersion;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kPluginNamespace;
    }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return mFields.collection();
    }

protected:
    DatPluginCreatorBase(char const* name, std::vector<nvinfer1::PluginField> fields)
        : mName(name)
        , mFields(std::move(fields))
    {
    }

private:
    char const* mName;
    PluginFields mFields;
};

} // namespace trt
} // namespace dat
