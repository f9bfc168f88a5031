// CPU-only checks of libdat_trt_plugins.so's build-time logic, without a GPU or libnvinfer: the library
// is dlopen-ed like IPluginRegistry::loadLibrary does, then creators, fields, capabilities, dtypes,
// formats, output shapes (DATDeformSample) and the serialisation round trip are exercised.
// Usage: trtPluginHarness <libdat_trt_plugins.so>; exit code 0 = all checks passed.
#include <NvInferRuntime.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{
int gFailures = 0;

void check(bool ok, std::string const& what)
{
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    gFailures += ok ? 0 : 1;
}

PluginFieldCollection const* fields(std::vector<PluginField>& storage)
{
    static PluginFieldCollection fc;
    fc.nbFields = static_cast<int32_t>(storage.size());
    fc.fields = storage.data();
    return &fc;
}

int32_t intField(PluginFieldCollection const* fc, char const* name)
{
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        if (std::strcmp(fc->fields[i].name, name) == 0 && fc->fields[i].type == PluginFieldType::kINT32)
        {
            return *static_cast<int32_t const*>(fc->fields[i].data);
        }
    }
    return -1000;
}

DynamicPluginTensorDesc desc(DataType type, TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc d{};
    d.desc.type = type;
    d.desc.format = format;
    return d;
}
} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        std::fprintf(stderr, "usage: %s libdat_trt_plugins.so\n", argv[0]);
        return 2;
    }
    void* handle = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr)
    {
        std::fprintf(stderr, "dlopen failed: %s\n", dlerror());
        return 2;
    }
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(handle, "getCreators"));
    check(getCreators != nullptr && dlsym(handle, "setLoggerFinder") != nullptr, "exports getCreators and setLoggerFinder");
    if (getCreators == nullptr)
    {
        return 1;
    }
    int32_t count = 0;
    IPluginCreatorInterface* const* creators = getCreators(count);
    check(count == 2, "two creators");
    IPluginCreatorV3One* deform = nullptr;
    IPluginCreatorV3One* bias = nullptr;
    for (int32_t i = 0; i < count; ++i)
    {
        check(std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0, "creator is V3One");
        auto* creator = static_cast<IPluginCreatorV3One*>(creators[i]);
        check(std::strcmp(creator->getPluginVersion(), "1") == 0 && std::strcmp(creator->getPluginNamespace(), "dat") == 0,
            std::string(creator->getPluginName()) + ": version 1, namespace dat");
        (std::strcmp(creator->getPluginName(), "DATDeformSample") == 0 ? deform : bias) = creator;
    }
    check(deform != nullptr && bias != nullptr && std::strcmp(bias->getPluginName(), "DATRelPosBias") == 0,
        "creators DATDeformSample and DATRelPosBias");
    if (deform == nullptr || bias == nullptr)
    {
        return 1;
    }
    check(deform->getFieldNames()->nbFields == 1 && bias->getFieldNames()->nbFields == 2, "field names: groups (+ convention)");

    // Missing or invalid attributes are refused, not defaulted.
    std::vector<PluginField> none;
    check(deform->createPlugin("n", fields(none), TensorRTPhase::kBUILD) == nullptr, "DATDeformSample without groups is refused");
    int32_t groups = 3;
    int32_t badConvention = 7;
    std::vector<PluginField> badBias{{"groups", &groups, PluginFieldType::kINT32, 1},
        {"convention", &badConvention, PluginFieldType::kINT32, 1}};
    check(bias->createPlugin("n", fields(badBias), TensorRTPhase::kBUILD) == nullptr, "DATRelPosBias convention 7 is refused");

    // DATDeformSample: capabilities, dtypes, formats, shapes, serialisation.
    std::vector<PluginField> deformFields{{"groups", &groups, PluginFieldType::kINT32, 1}};
    IPluginV3* plugin = deform->createPlugin("deform", fields(deformFields), TensorRTPhase::kBUILD);
    check(plugin != nullptr, "DATDeformSample created with groups=3");
    if (plugin == nullptr)
    {
        return 1;
    }
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    check(std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0
            && std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0
            && std::strcmp(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0,
        "core, build and runtime capabilities");
    check(std::strcmp(core->getPluginName(), "DATDeformSample") == 0 && std::strcmp(core->getPluginNamespace(), "dat") == 0,
        "core: name and namespace");
    DataType in[2] = {DataType::kHALF, DataType::kFLOAT};
    DataType out[1] = {DataType::kFLOAT};
    check(build->getOutputDataTypes(out, 1, in, 2) == 0 && out[0] == DataType::kHALF, "fp16 x -> fp16 output");
    DataType inInt[2] = {DataType::kINT32, DataType::kFLOAT};
    check(build->getOutputDataTypes(out, 1, inInt, 2) != 0, "int32 x is refused");

    DynamicPluginTensorDesc io[3] = {desc(DataType::kHALF), desc(DataType::kFLOAT), desc(DataType::kHALF)};
    check(build->supportsFormatCombination(0, io, 2, 1) && build->supportsFormatCombination(1, io, 2, 1)
            && build->supportsFormatCombination(2, io, 2, 1),
        "fp16 x, fp32 pos, fp16 out supported");
    io[2] = desc(DataType::kFLOAT);
    check(!build->supportsFormatCombination(2, io, 2, 1), "output dtype must match x");
    io[0] = desc(DataType::kFLOAT, TensorFormat::kHWC8);
    check(!build->supportsFormatCombination(0, io, 2, 1), "non-linear format refused");

    // Shapes: (B, C, Hk, Wk) from x's first two and pos's middle two dimensions (expression pointers pass through).
    DimsExprs shapes[2];
    IDimensionExpr const* tokens[8];
    for (int i = 0; i < 8; ++i)
    {
        tokens[i] = reinterpret_cast<IDimensionExpr const*>(reinterpret_cast<char const*>(&tokens[0]) + i + 1);
    }
    shapes[0].nbDims = 4;
    shapes[1].nbDims = 4;
    for (int i = 0; i < 4; ++i)
    {
        shapes[0].d[i] = tokens[i];
        shapes[1].d[i] = tokens[4 + i];
    }
    DimsExprs outShape;
    // DATDeformSample needs no arithmetic on dimensions, so its builder argument is never touched.
    alignas(IExprBuilder) unsigned char builderStorage[sizeof(IExprBuilder)] = {};
    auto& untouchedBuilder = *reinterpret_cast<IExprBuilder*>(builderStorage);
    check(build->getOutputShapes(shapes, 2, nullptr, 0, &outShape, 1, untouchedBuilder) == 0 && outShape.nbDims == 4
            && outShape.d[0] == tokens[0] && outShape.d[1] == tokens[1] && outShape.d[2] == tokens[5]
            && outShape.d[3] == tokens[6],
        "output shape (x0, x1, pos1, pos2)");

    PluginFieldCollection const* serialized = runtime->getFieldsToSerialize();
    check(intField(serialized, "groups") == 3, "serialises groups=3");
    IPluginV3* restored = deform->createPlugin("deform", serialized, TensorRTPhase::kRUNTIME);
    check(restored != nullptr, "recreated from serialised fields (runtime phase)");
    IPluginV3* attached = runtime->attachToContext(nullptr);
    check(attached != nullptr && attached != plugin, "attachToContext clones");
    delete restored;
    delete attached;
    delete plugin;

    // DATRelPosBias: fields round trip and formats (table dtype decides the output).
    int32_t convention = 1;
    std::vector<PluginField> biasFields{{"groups", &groups, PluginFieldType::kINT32, 1},
        {"convention", &convention, PluginFieldType::kINT32, 1}};
    IPluginV3* biasPlugin = bias->createPlugin("bias", fields(biasFields), TensorRTPhase::kBUILD);
    check(biasPlugin != nullptr, "DATRelPosBias created with groups=3, convention=1");
    if (biasPlugin != nullptr)
    {
        auto* biasRuntime
            = static_cast<IPluginV3OneRuntime*>(biasPlugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        PluginFieldCollection const* biasSerialized = biasRuntime->getFieldsToSerialize();
        check(intField(biasSerialized, "groups") == 3 && intField(biasSerialized, "convention") == 1,
            "serialises groups=3, convention=1");
        auto* biasBuild = static_cast<IPluginV3OneBuild*>(biasPlugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
        DynamicPluginTensorDesc bio[4]
            = {desc(DataType::kHALF), desc(DataType::kFLOAT), desc(DataType::kHALF), desc(DataType::kHALF)};
        bool all = true;
        for (int32_t pos = 0; pos < 4; ++pos)
        {
            all = all && biasBuild->supportsFormatCombination(pos, bio, 3, 1);
        }
        check(all, "fp16 table, fp32 pos, fp16 x, fp16 out supported");
        bio[3] = desc(DataType::kFLOAT);
        check(!biasBuild->supportsFormatCombination(3, bio, 3, 1), "bias output dtype must match the table");
        check(biasBuild->getNbOutputs() == 1, "one output");
        delete biasPlugin;
    }

    std::printf("%s: %d failure(s)\n", gFailures == 0 ? "PASSED" : "FAILED", gFailures);
    return gFailures == 0 ? 0 : 1;
}
