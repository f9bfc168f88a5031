// Plugin attributes as TensorRT fields: one list per plugin serves its creator (the schema, no data) and its
// instances (data pointing at the plugin's values, which getFieldsToSerialize hands out).
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace dat
{
namespace trt
{

inline nvinfer1::PluginField intField(char const* name, int32_t const* value = nullptr)
{
    return nvinfer1::PluginField(name, value, nvinfer1::PluginFieldType::kINT32, 1);
}

inline nvinfer1::PluginField floatField(char const* name, float const* value = nullptr)
{
    return nvinfer1::PluginField(name, value, nvinfer1::PluginFieldType::kFLOAT32, 1);
}

// Owns the fields and the collection that points at them; not copyable, since the collection (and the
// fields' data) point into the owner.
class PluginFields
{
public:
    explicit PluginFields(std::vector<nvinfer1::PluginField> fields)
        : mFields(std::move(fields))
    {
        mCollection.nbFields = static_cast<int32_t>(mFields.size());
        mCollection.fields = mFields.data();
    }
    PluginFields(PluginFields const&) = delete;
    PluginFields& operator=(PluginFields const&) = delete;

    nvinfer1::PluginFieldCollection const* collection() const noexcept
    {
        return &mCollection;
    }

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

} // namespace trt
} // namespace dat
