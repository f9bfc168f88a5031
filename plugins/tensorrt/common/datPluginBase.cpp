#include "datPluginBase.h"

#include <cstring>
#include <mutex>

namespace dat
{
namespace trt
{
namespace
{

std::mutex gLoggerMutex;
nvinfer1::ILoggerFinder* gLoggerFinder = nullptr;

} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    if (gLoggerFinder == nullptr && finder != nullptr)
    {
        gLoggerFinder = finder;
    }
}

void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        std::lock_guard<std::mutex> lock(gLoggerMutex);
        nvinfer1::ILogger* logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(severity, ("[dat plugins] " + message).c_str());
        }
    }
    catch (...)
    {
    }
}

namespace
{
// The one well-formed field `name` of `type` (length 1, with data), or nullptr; a malformed one is reported.
void const* findScalarField(nvinfer1::PluginFieldCollection const* fc, char const* name,
    nvinfer1::PluginFieldType type, char const* typeName) noexcept
{
    if (fc == nullptr)
    {
        return nullptr;
    }
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        nvinfer1::PluginField const& field = fc->fields[i];
        if (field.name == nullptr || std::strcmp(field.name, name) != 0)
        {
            continue;
        }
        if (field.type != type || field.length != 1 || field.data == nullptr)
        {
            logMessage(nvinfer1::ILogger::Severity::kERROR,
                std::string("field '") + name + "' must be one " + typeName + " value; ignoring it");
            return nullptr;
        }
        return field.data;
    }
    return nullptr;
}
} // namespace

bool readIntField(nvinfer1::PluginFieldCollection const* fc, char const* name, int32_t* value) noexcept
{
    void const* data = findScalarField(fc, name, nvinfer1::PluginFieldType::kINT32, "INT32");
    if (data == nullptr)
    {
        return false;
    }
    *value = *static_cast<int32_t const*>(data);
    return true;
}

bool readFloatField(nvinfer1::PluginFieldCollection const* fc, char const* name, float* value) noexcept
{
    void const* data = findScalarField(fc, name, nvinfer1::PluginFieldType::kFLOAT32, "FLOAT32");
    if (data == nullptr)
    {
        return false;
    }
    *value = *static_cast<float const*>(data);
    return true;
}

nvinfer1::IPluginCapability* DatPluginBase::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

int32_t DatPluginBase::getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
    nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbOutputs != 1 || nbInputs < 1 || !isSupportedData(inputTypes[0]))
    {
        return -1;
    }
    outputTypes[0] = inputTypes[0];
    return 0;
}

} // namespace trt
} // namespace dat
