// Entry points of libdat_trt_plugins.so for IPluginRegistry::loadLibrary (Python:
// registry.load_library; trtexec --dynamicPlugins). No static registration: that would need libnvinfer.
#include "common/datPluginBase.h"
#include "deformAttentionPlugin/deformAttentionPlugin.h"
#include "deformSamplePlugin/deformSamplePlugin.h"
#include "relPosBiasPlugin/relPosBiasPlugin.h"
#include "windowAttentionPlugin/windowAttentionPlugin.h"

extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators)
{
    static dat::trt::DeformSamplePluginCreator deformSampleCreator;
    static dat::trt::RelPosBiasPluginCreator relPosBiasCreator;
    static dat::trt::WindowAttentionPluginCreator windowAttentionCreator;
    static dat::trt::DeformAttentionPluginCreator deformAttentionCreator;
    static nvinfer1::IPluginCreatorInterface* const creators[]
        = {&deformSampleCreator, &relPosBiasCreator, &windowAttentionCreator, &deformAttentionCreator};
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    dat::trt::setLoggerFinder(finder);
}
