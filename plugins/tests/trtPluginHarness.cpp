// CPU-only checks of libdat_trt_plugins.so's build-time logic, without a GPU or libnvinfer: the library
// is dlopen-ed like IPluginRegistry::loadLibrary does, then creators, fields, capabilities, dtypes,
// formats, output shapes and the serialisation round trip are exercised. Output shape expressions go
// through a recording stand-in for TensorRT's IExprBuilder (FakeExprBuilder below).
// Usage: trtPluginHarness <libdat_trt_plugins.so>; exit code 0 = all checks passed.
#include <NvInferRuntime.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <memory>
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

float floatField(PluginFieldCollection const* fc, char const* name)
{
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        if (std::strcmp(fc->fields[i].name, name) == 0 && fc->fields[i].type == PluginFieldType::kFLOAT32)
        {
            return *static_cast<float const*>(fc->fields[i].data);
        }
    }
    return -1000.f;
}

DynamicPluginTensorDesc desc(DataType type, TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc d{};
    d.desc.type = type;
    d.desc.format = format;
    return d;
}

DynamicPluginTensorDesc shaped(std::vector<int64_t> const& dims)
{
    DynamicPluginTensorDesc d = desc(DataType::kFLOAT);
    d.desc.dims.nbDims = static_cast<int32_t>(dims.size());
    for (size_t i = 0; i < dims.size(); ++i)
    {
        d.desc.dims.d[i] = dims[i];
    }
    return d;
}

// Test doubles for TensorRT's dimension expressions (whose implementation lives in libnvinfer): every
// expression is a FakeExpr node, a named input dimension, a constant or an operation on two nodes, so a
// check can read back the expression a plugin built. Only for this harness; plugins never do this.
class FakeExpr : public IDimensionExpr
{
public:
    enum class Kind
    {
        kInput,
        kConstant,
        kOperation
    };
    FakeExpr(Kind kind, int64_t value, DimensionOperation op, IDimensionExpr const* first, IDimensionExpr const* second)
        : kind(kind)
        , value(value)
        , op(op)
        , first(first)
        , second(second)
    {
        mState.node = this;
        mImpl = &mState;
    }
    Kind const kind;
    int64_t const value; // constant value, or input number
    DimensionOperation const op;
    IDimensionExpr const* const first;
    IDimensionExpr const* const second;

    bool isOperation(DimensionOperation o, IDimensionExpr const* a, IDimensionExpr const* b) const
    {
        return kind == Kind::kOperation && op == o && first == a && second == b;
    }

private:
    struct State : apiv::VDimensionExpr
    {
        FakeExpr const* node{};
        bool isConstant() const override
        {
            return node->kind == Kind::kConstant;
        }
        int64_t getConstantValue() const override
        {
            return node->kind == Kind::kConstant ? node->value : INT64_MIN;
        }
        bool isSizeTensor() const override
        {
            return false;
        }
    } mState;
};

class FakeExprBuilder : public IExprBuilder
{
public:
    FakeExprBuilder()
    {
        mImpl = &mState;
    }
    IDimensionExpr const* input(int64_t number)
    {
        return mState.add(FakeExpr::Kind::kInput, number, DimensionOperation::kSUM, nullptr, nullptr);
    }
    // The constant node `value`, if the plugin made one.
    static bool isConstant(IDimensionExpr const* e, int64_t value)
    {
        auto const* node = static_cast<FakeExpr const*>(e);
        return node != nullptr && node->kind == FakeExpr::Kind::kConstant && node->value == value;
    }

private:
    struct State : apiv::VExprBuilder
    {
        std::vector<std::unique_ptr<FakeExpr>> nodes;
        IDimensionExpr const* add(FakeExpr::Kind kind, int64_t value, DimensionOperation op, IDimensionExpr const* a,
            IDimensionExpr const* b)
        {
            nodes.emplace_back(new FakeExpr(kind, value, op, a, b));
            return nodes.back().get();
        }
        IDimensionExpr const* constant(int64_t value) override
        {
            return add(FakeExpr::Kind::kConstant, value, DimensionOperation::kSUM, nullptr, nullptr);
        }
        IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override
        {
            return add(FakeExpr::Kind::kOperation, 0, op, &a, &b);
        }
        IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
        {
            return nullptr;
        }
    } mState;
};

// DimsExprs of `nbDims` fresh input nodes.
DimsExprs inputShape(FakeExprBuilder& builder, int32_t nbDims)
{
    DimsExprs shape{};
    shape.nbDims = nbDims;
    for (int32_t i = 0; i < nbDims; ++i)
    {
        shape.d[i] = builder.input(i);
    }
    return shape;
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
    check(count == 4, "four creators");
    IPluginCreatorV3One* deform = nullptr;
    IPluginCreatorV3One* bias = nullptr;
    IPluginCreatorV3One* window = nullptr;
    IPluginCreatorV3One* attention = nullptr;
    for (int32_t i = 0; i < count; ++i)
    {
        check(std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0, "creator is V3One");
        auto* creator = static_cast<IPluginCreatorV3One*>(creators[i]);
        check(std::strcmp(creator->getPluginVersion(), "1") == 0 && std::strcmp(creator->getPluginNamespace(), "dat") == 0,
            std::string(creator->getPluginName()) + ": version 1, namespace dat");
        std::string const name = creator->getPluginName();
        (name == "DATDeformSample"  ? deform
                : name == "DATRelPosBias" ? bias
                : name == "DATWindowAttention" ? window
                                               : attention)
            = creator;
    }
    check(deform != nullptr && bias != nullptr && window != nullptr && attention != nullptr
            && std::strcmp(attention->getPluginName(), "DATDeformAttention") == 0,
        "creators DATDeformSample, DATRelPosBias, DATWindowAttention and DATDeformAttention");
    if (deform == nullptr || bias == nullptr || window == nullptr || attention == nullptr)
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
        // (B * heads, H * W, Hk * Wk) from table (heads, Th, Tw), pos (B*g, Hk, Wk, 2), x (B, C, H, W).
        FakeExprBuilder builder;
        DimsExprs biasShapes[3] = {inputShape(builder, 3), inputShape(builder, 4), inputShape(builder, 4)};
        DimsExprs biasOut{};
        auto const prod = DimensionOperation::kPROD;
        check(biasBuild->getOutputShapes(biasShapes, 3, nullptr, 0, &biasOut, 1, builder) == 0 && biasOut.nbDims == 3
                && static_cast<FakeExpr const*>(biasOut.d[0])->isOperation(prod, biasShapes[2].d[0], biasShapes[0].d[0])
                && static_cast<FakeExpr const*>(biasOut.d[1])->isOperation(prod, biasShapes[2].d[2], biasShapes[2].d[3])
                && static_cast<FakeExpr const*>(biasOut.d[2])->isOperation(prod, biasShapes[1].d[1], biasShapes[1].d[2]),
            "bias output shape (x0 * table0, x2 * x3, pos1 * pos2)");
        delete biasPlugin;
    }

    // DATWindowAttention: fields (three INT32 and a FLOAT32), validation, formats, shapes, serialisation.
    PluginFieldCollection const* windowNames = window->getFieldNames();
    check(windowNames->nbFields == 4 && std::strcmp(windowNames->fields[3].name, "scale") == 0
            && windowNames->fields[3].type == PluginFieldType::kFLOAT32,
        "window field names: heads, window, shift (INT32), scale (FLOAT32)");
    int32_t heads = 3;
    int32_t windowSize = 7;
    int32_t shift = 4;
    float scale = 0.17677669f;
    auto windowFieldsOf = [&](int32_t const* h, int32_t const* w, int32_t const* s, void const* sc, PluginFieldType scType) {
        return std::vector<PluginField>{{"heads", h, PluginFieldType::kINT32, 1}, {"window", w, PluginFieldType::kINT32, 1},
            {"shift", s, PluginFieldType::kINT32, 1}, {"scale", sc, scType, 1}};
    };
    int32_t const zero = 0;
    int32_t const minusOne = -1;
    std::vector<PluginField> badWindow = windowFieldsOf(&heads, &windowSize, &windowSize, &scale, PluginFieldType::kFLOAT32);
    check(window->createPlugin("n", fields(badWindow), TensorRTPhase::kBUILD) == nullptr, "DATWindowAttention shift == window is refused");
    badWindow = windowFieldsOf(&heads, &windowSize, &minusOne, &scale, PluginFieldType::kFLOAT32);
    check(window->createPlugin("n", fields(badWindow), TensorRTPhase::kBUILD) == nullptr, "DATWindowAttention shift -1 is refused");
    badWindow = windowFieldsOf(&zero, &windowSize, &shift, &scale, PluginFieldType::kFLOAT32);
    check(window->createPlugin("n", fields(badWindow), TensorRTPhase::kBUILD) == nullptr, "DATWindowAttention heads 0 is refused");
    badWindow = windowFieldsOf(&heads, &zero, &zero, &scale, PluginFieldType::kFLOAT32);
    check(window->createPlugin("n", fields(badWindow), TensorRTPhase::kBUILD) == nullptr, "DATWindowAttention window 0 is refused");
    badWindow = windowFieldsOf(&heads, &windowSize, &shift, &heads, PluginFieldType::kINT32);
    check(window->createPlugin("n", fields(badWindow), TensorRTPhase::kBUILD) == nullptr, "DATWindowAttention INT32 scale is refused");
    badWindow.pop_back();
    check(window->createPlugin("n", fields(badWindow), TensorRTPhase::kBUILD) == nullptr, "DATWindowAttention without scale is refused");

    std::vector<PluginField> windowFields = windowFieldsOf(&heads, &windowSize, &shift, &scale, PluginFieldType::kFLOAT32);
    IPluginV3* windowPlugin = window->createPlugin("window", fields(windowFields), TensorRTPhase::kBUILD);
    check(windowPlugin != nullptr, "DATWindowAttention created with heads=3, window=7, shift=4, scale=0.17677669");
    if (windowPlugin != nullptr)
    {
        auto* wCore = static_cast<IPluginV3OneCore*>(windowPlugin->getCapabilityInterface(PluginCapabilityType::kCORE));
        auto* wBuild = static_cast<IPluginV3OneBuild*>(windowPlugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
        auto* wRuntime
            = static_cast<IPluginV3OneRuntime*>(windowPlugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        check(wCore != nullptr && wBuild != nullptr && wRuntime != nullptr
                && std::strcmp(wCore->getPluginName(), "DATWindowAttention") == 0
                && std::strcmp(wCore->getPluginVersion(), "1") == 0 && std::strcmp(wCore->getPluginNamespace(), "dat") == 0,
            "window: capabilities, name, version and namespace");
        DataType wIn[2] = {DataType::kHALF, DataType::kFLOAT};
        DataType wOut[1] = {DataType::kFLOAT};
        check(wBuild->getOutputDataTypes(wOut, 1, wIn, 2) == 0 && wOut[0] == DataType::kHALF && wBuild->getNbOutputs() == 1,
            "window: fp16 qkv -> one fp16 output");

        DynamicPluginTensorDesc wio[3] = {desc(DataType::kHALF), desc(DataType::kFLOAT), desc(DataType::kHALF)};
        bool all = true;
        for (int32_t pos = 0; pos < 3; ++pos)
        {
            all = all && wBuild->supportsFormatCombination(pos, wio, 2, 1);
        }
        check(all, "window: fp16 qkv, fp32 bias, fp16 out supported");
        wio[1] = desc(DataType::kHALF);
        check(wBuild->supportsFormatCombination(1, wio, 2, 1), "window: fp16 qkv, fp16 bias supported");
        wio[0] = desc(DataType::kFLOAT);
        wio[2] = desc(DataType::kFLOAT);
        check(wBuild->supportsFormatCombination(0, wio, 2, 1) && !wBuild->supportsFormatCombination(1, wio, 2, 1),
            "window: fp32 qkv takes an fp32 bias only (bias is T or fp32)");
        wio[1] = desc(DataType::kFLOAT);
        check(wBuild->supportsFormatCombination(1, wio, 2, 1) && wBuild->supportsFormatCombination(2, wio, 2, 1),
            "window: fp32 qkv, fp32 bias, fp32 out supported");
        wio[2] = desc(DataType::kHALF);
        check(!wBuild->supportsFormatCombination(2, wio, 2, 1), "window: output dtype must match qkv");
        wio[0] = desc(DataType::kHALF, TensorFormat::kHWC8);
        check(!wBuild->supportsFormatCombination(0, wio, 2, 1), "window: non-linear format refused");
        wio[0] = desc(DataType::kINT32);
        check(!wBuild->supportsFormatCombination(0, wio, 2, 1), "window: int32 qkv refused");

        // (B, H, W, C) = (qkv0, qkv1, qkv2, qkv3 floordiv 3): the batch stays an expression (dynamic batch).
        FakeExprBuilder builder;
        DimsExprs wShapes[2] = {inputShape(builder, 4), inputShape(builder, 4)};
        DimsExprs wShape{};
        bool shapeOk = wBuild->getOutputShapes(wShapes, 2, nullptr, 0, &wShape, 1, builder) == 0 && wShape.nbDims == 4
            && wShape.d[0] == wShapes[0].d[0] && wShape.d[1] == wShapes[0].d[1] && wShape.d[2] == wShapes[0].d[2];
        auto const* channels = shapeOk ? static_cast<FakeExpr const*>(wShape.d[3]) : nullptr;
        check(channels != nullptr && channels->kind == FakeExpr::Kind::kOperation && channels->op == DimensionOperation::kFLOOR_DIV
                && channels->first == wShapes[0].d[3] && FakeExprBuilder::isConstant(channels->second, 3),
            "window: output shape (qkv0, qkv1, qkv2, qkv3 floordiv 3)");
        DimsExprs wrongRank[2] = {inputShape(builder, 3), inputShape(builder, 4)};
        check(wBuild->getOutputShapes(wrongRank, 2, nullptr, 0, &wShape, 1, builder) != 0, "window: 3-d qkv refused");

        // configurePlugin checks what is known at build time (-1 = dynamic).
        DynamicPluginTensorDesc wOutDesc = shaped({-1, 56, 56, 96});
        DynamicPluginTensorDesc ok[2] = {shaped({-1, 56, 56, 288}), shaped({64, 3, 49, 49})};
        check(wBuild->configurePlugin(ok, 2, &wOutDesc, 1) == 0, "window: configure qkv (-1,56,56,288), bias (64,3,49,49)");
        DynamicPluginTensorDesc shared[2] = {shaped({-1, -1, -1, 288}), shaped({1, 3, 49, 49})};
        check(wBuild->configurePlugin(shared, 2, &wOutDesc, 1) == 0, "window: configure dynamic map, one shared bias");
        DynamicPluginTensorDesc badHeads[2] = {shaped({-1, 56, 56, 288}), shaped({64, 4, 49, 49})};
        check(wBuild->configurePlugin(badHeads, 2, &wOutDesc, 1) != 0, "window: bias with 4 heads refused");
        DynamicPluginTensorDesc badTokens[2] = {shaped({-1, 56, 56, 288}), shaped({64, 3, 49, 36})};
        check(wBuild->configurePlugin(badTokens, 2, &wOutDesc, 1) != 0, "window: bias (.., 49, 36) refused");
        DynamicPluginTensorDesc badMap[2] = {shaped({-1, 57, 56, 288}), shaped({1, 3, 49, 49})};
        check(wBuild->configurePlugin(badMap, 2, &wOutDesc, 1) != 0, "window: H=57 refused");
        DynamicPluginTensorDesc badWindows[2] = {shaped({-1, 56, 56, 288}), shaped({63, 3, 49, 49})};
        check(wBuild->configurePlugin(badWindows, 2, &wOutDesc, 1) != 0, "window: bias of 63 windows refused");
        DynamicPluginTensorDesc badChannels[2] = {shaped({-1, 56, 56, 289}), shaped({1, 3, 49, 49})};
        check(wBuild->configurePlugin(badChannels, 2, &wOutDesc, 1) != 0, "window: qkv last dimension 289 refused");

        PluginFieldCollection const* wSerialized = wRuntime->getFieldsToSerialize();
        check(wSerialized->nbFields == 4 && intField(wSerialized, "heads") == 3 && intField(wSerialized, "window") == 7
                && intField(wSerialized, "shift") == 4 && floatField(wSerialized, "scale") == scale,
            "window: serialises heads=3, window=7, shift=4, scale=0.17677669");
        IPluginV3* wRestored = window->createPlugin("window", wSerialized, TensorRTPhase::kRUNTIME);
        check(wRestored != nullptr, "window: recreated from serialised fields (runtime phase)");
        if (wRestored != nullptr)
        {
            auto* restoredRuntime
                = static_cast<IPluginV3OneRuntime*>(wRestored->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
            PluginFieldCollection const* again = restoredRuntime->getFieldsToSerialize();
            check(intField(again, "heads") == 3 && intField(again, "window") == 7 && intField(again, "shift") == 4
                    && floatField(again, "scale") == scale,
                "window: the recreated plugin serialises the same fields");
        }
        IPluginV3* wAttached = wRuntime->attachToContext(nullptr);
        check(wAttached != nullptr && wAttached != windowPlugin, "window: attachToContext clones");
        delete wRestored;
        delete wAttached;
        delete windowPlugin;
    }

    // DATDeformAttention: fields (three INT32 and a FLOAT32), validation, formats, shapes, serialisation.
    PluginFieldCollection const* attentionNames = attention->getFieldNames();
    check(attentionNames->nbFields == 4 && std::strcmp(attentionNames->fields[0].name, "heads") == 0
            && std::strcmp(attentionNames->fields[1].name, "groups") == 0
            && std::strcmp(attentionNames->fields[2].name, "convention") == 0
            && std::strcmp(attentionNames->fields[3].name, "scale") == 0
            && attentionNames->fields[3].type == PluginFieldType::kFLOAT32,
        "deform attention field names: heads, groups, convention (INT32), scale (FLOAT32)");
    int32_t aHeads = 12;
    int32_t aGroups = 3;
    int32_t aConvention = 1;
    float aScale = 0.17677669f;
    auto attentionFieldsOf = [&](int32_t const* h, int32_t const* g, int32_t const* c, void const* sc, PluginFieldType scType) {
        return std::vector<PluginField>{{"heads", h, PluginFieldType::kINT32, 1}, {"groups", g, PluginFieldType::kINT32, 1},
            {"convention", c, PluginFieldType::kINT32, 1}, {"scale", sc, scType, 1}};
    };
    int32_t const five = 5;
    int32_t const two = 2;
    float const infinite = 1.f / 0.f;
    std::vector<PluginField> badAttention = attentionFieldsOf(&zero, &aGroups, &aConvention, &aScale, PluginFieldType::kFLOAT32);
    check(attention->createPlugin("n", fields(badAttention), TensorRTPhase::kBUILD) == nullptr, "DATDeformAttention heads 0 is refused");
    badAttention = attentionFieldsOf(&aHeads, &zero, &aConvention, &aScale, PluginFieldType::kFLOAT32);
    check(attention->createPlugin("n", fields(badAttention), TensorRTPhase::kBUILD) == nullptr, "DATDeformAttention groups 0 is refused");
    badAttention = attentionFieldsOf(&aHeads, &five, &aConvention, &aScale, PluginFieldType::kFLOAT32);
    check(attention->createPlugin("n", fields(badAttention), TensorRTPhase::kBUILD) == nullptr,
        "DATDeformAttention groups 5 not dividing heads 12 is refused");
    badAttention = attentionFieldsOf(&aHeads, &aGroups, &two, &aScale, PluginFieldType::kFLOAT32);
    check(attention->createPlugin("n", fields(badAttention), TensorRTPhase::kBUILD) == nullptr, "DATDeformAttention convention 2 is refused");
    badAttention = attentionFieldsOf(&aHeads, &aGroups, &minusOne, &aScale, PluginFieldType::kFLOAT32);
    check(attention->createPlugin("n", fields(badAttention), TensorRTPhase::kBUILD) == nullptr, "DATDeformAttention convention -1 is refused");
    badAttention = attentionFieldsOf(&aHeads, &aGroups, &aConvention, &infinite, PluginFieldType::kFLOAT32);
    check(attention->createPlugin("n", fields(badAttention), TensorRTPhase::kBUILD) == nullptr, "DATDeformAttention infinite scale is refused");
    badAttention = attentionFieldsOf(&aHeads, &aGroups, &aConvention, &aHeads, PluginFieldType::kINT32);
    check(attention->createPlugin("n", fields(badAttention), TensorRTPhase::kBUILD) == nullptr, "DATDeformAttention INT32 scale is refused");
    badAttention.pop_back();
    check(attention->createPlugin("n", fields(badAttention), TensorRTPhase::kBUILD) == nullptr, "DATDeformAttention without scale is refused");
    badAttention = attentionFieldsOf(&aHeads, &aGroups, &aConvention, &aScale, PluginFieldType::kFLOAT32);
    badAttention.erase(badAttention.begin() + 1);
    check(attention->createPlugin("n", fields(badAttention), TensorRTPhase::kBUILD) == nullptr, "DATDeformAttention without groups is refused");

    std::vector<PluginField> attentionFields = attentionFieldsOf(&aHeads, &aGroups, &aConvention, &aScale, PluginFieldType::kFLOAT32);
    IPluginV3* attentionPlugin = attention->createPlugin("attention", fields(attentionFields), TensorRTPhase::kBUILD);
    check(attentionPlugin != nullptr, "DATDeformAttention created with heads=12, groups=3, convention=1, scale=0.17677669");
    if (attentionPlugin != nullptr)
    {
        auto* aCore = static_cast<IPluginV3OneCore*>(attentionPlugin->getCapabilityInterface(PluginCapabilityType::kCORE));
        auto* aBuild = static_cast<IPluginV3OneBuild*>(attentionPlugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
        auto* aRuntime
            = static_cast<IPluginV3OneRuntime*>(attentionPlugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        check(aCore != nullptr && aBuild != nullptr && aRuntime != nullptr
                && std::strcmp(aCore->getPluginName(), "DATDeformAttention") == 0
                && std::strcmp(aCore->getPluginVersion(), "1") == 0 && std::strcmp(aCore->getPluginNamespace(), "dat") == 0,
            "deform attention: capabilities, name, version and namespace");
        DataType aIn[5] = {DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kFLOAT, DataType::kFLOAT};
        DataType aOut[1] = {DataType::kFLOAT};
        check(aBuild->getOutputDataTypes(aOut, 1, aIn, 5) == 0 && aOut[0] == DataType::kHALF && aBuild->getNbOutputs() == 1,
            "deform attention: fp16 q -> one fp16 output");

        // inOut = q, k, v, table, pos, output
        auto const half = DataType::kHALF;
        auto const single = DataType::kFLOAT;
        auto supportsAll = [&](DataType q, DataType k, DataType v, DataType table, DataType pos, DataType out) {
            DynamicPluginTensorDesc aio[6] = {desc(q), desc(k), desc(v), desc(table), desc(pos), desc(out)};
            bool all = true;
            for (int32_t pos = 0; pos < 6; ++pos)
            {
                all = all && aBuild->supportsFormatCombination(pos, aio, 5, 1);
            }
            return all;
        };
        check(supportsAll(single, single, single, single, single, single), "deform attention: all fp32 supported");
        check(supportsAll(half, half, half, half, half, half), "deform attention: all fp16 supported");
        check(supportsAll(half, half, half, single, single, half), "deform attention: fp16 data, fp32 table and pos supported");
        check(supportsAll(single, single, single, single, half, single), "deform attention: fp32 data, fp16 pos supported");
        check(!supportsAll(single, single, single, half, single, single),
            "deform attention: fp32 data takes an fp32 table only (table is T or fp32)");
        check(!supportsAll(half, single, half, half, half, half), "deform attention: k dtype must match q");
        check(!supportsAll(half, half, single, half, half, half), "deform attention: v dtype must match q");
        check(!supportsAll(half, half, half, half, half, single), "deform attention: output dtype must match q");
        DynamicPluginTensorDesc aio[6] = {desc(half), desc(half), desc(half), desc(half), desc(half), desc(half)};
        aio[4] = desc(DataType::kINT32);
        check(!aBuild->supportsFormatCombination(4, aio, 5, 1), "deform attention: int32 pos refused");
        aio[0] = desc(half, TensorFormat::kHWC8);
        check(!aBuild->supportsFormatCombination(0, aio, 5, 1), "deform attention: non-linear format refused");
        check(!aBuild->supportsFormatCombination(5, aio, 4, 1), "deform attention: four inputs refused");

        // Output = q's dimensions, expression for expression (the batch stays dynamic).
        FakeExprBuilder builder;
        DimsExprs aShapes[5] = {inputShape(builder, 4), inputShape(builder, 3), inputShape(builder, 3),
            inputShape(builder, 3), inputShape(builder, 4)};
        DimsExprs aShape{};
        check(aBuild->getOutputShapes(aShapes, 5, nullptr, 0, &aShape, 1, builder) == 0 && aShape.nbDims == 4
                && aShape.d[0] == aShapes[0].d[0] && aShape.d[1] == aShapes[0].d[1] && aShape.d[2] == aShapes[0].d[2]
                && aShape.d[3] == aShapes[0].d[3],
            "deform attention: output shape (q0, q1, q2, q3)");
        DimsExprs aWrongRank[5] = {inputShape(builder, 3), inputShape(builder, 3), inputShape(builder, 3),
            inputShape(builder, 3), inputShape(builder, 4)};
        check(aBuild->getOutputShapes(aWrongRank, 5, nullptr, 0, &aShape, 1, builder) != 0, "deform attention: 3-d q refused");

        // configurePlugin checks what is known at build time (-1 = dynamic). DAT-T stage 3 shapes, 12 heads, 3 groups.
        DynamicPluginTensorDesc aOutDesc = shaped({-1, 14, 14, 384});
        auto configure = [&](std::vector<int64_t> const& q, std::vector<int64_t> const& k, std::vector<int64_t> const& v,
                             std::vector<int64_t> const& table, std::vector<int64_t> const& pos) {
            DynamicPluginTensorDesc in[5] = {shaped(q), shaped(k), shaped(v), shaped(table), shaped(pos)};
            return aBuild->configurePlugin(in, 5, &aOutDesc, 1);
        };
        check(configure({-1, 14, 14, 384}, {-1, 196, 384}, {-1, 196, 384}, {12, 27, 27}, {-1, 14, 14, 2}) == 0,
            "deform attention: configure dynamic batch, DAT-T stage 3");
        check(configure({2, 14, 14, 384}, {2, 196, 384}, {2, 196, 384}, {12, 27, 27}, {6, 14, 14, 2}) == 0,
            "deform attention: configure batch 2, pos (6, 14, 14, 2)");
        check(configure({-1, -1, -1, 384}, {-1, -1, 384}, {-1, -1, 384}, {12, 27, 27}, {-1, -1, -1, 2}) == 0,
            "deform attention: configure dynamic maps and keys");
        check(configure({-1, 14, 14, 380}, {-1, 196, 380}, {-1, 196, 380}, {12, 27, 27}, {-1, 14, 14, 2}) != 0,
            "deform attention: C=380 not divisible by 12 heads refused");
        check(configure({-1, 14, 14, 384}, {-1, 196, 192}, {-1, 196, 384}, {12, 27, 27}, {-1, 14, 14, 2}) != 0,
            "deform attention: k with other channels refused");
        check(configure({-1, 14, 14, 384}, {-1, 196, 384}, {-1, 195, 384}, {12, 27, 27}, {-1, 14, 14, 2}) != 0,
            "deform attention: v with other keys refused");
        check(configure({2, 14, 14, 384}, {3, 196, 384}, {2, 196, 384}, {12, 27, 27}, {6, 14, 14, 2}) != 0,
            "deform attention: k with another batch refused");
        check(configure({-1, 14, 14, 384}, {-1, 196, 384}, {-1, 196, 384}, {6, 27, 27}, {-1, 14, 14, 2}) != 0,
            "deform attention: table of 6 heads refused");
        check(configure({-1, 14, 14, 384}, {-1, 196, 384}, {-1, 196, 384}, {12, 0, 27}, {-1, 14, 14, 2}) != 0,
            "deform attention: empty table refused");
        check(configure({-1, 14, 14, 384}, {-1, 196, 384}, {-1, 196, 384}, {12, 27, 27}, {-1, 14, 7, 2}) != 0,
            "deform attention: pos of 98 points for 196 keys refused");
        check(configure({2, 14, 14, 384}, {2, 196, 384}, {2, 196, 384}, {12, 27, 27}, {2, 14, 14, 2}) != 0,
            "deform attention: pos of 2 entries for batch 2 x 3 groups refused");
        check(configure({-1, 14, 14, 384}, {-1, 196, 384}, {-1, 196, 384}, {12, 27, 27}, {-1, 14, 14, 3}) != 0,
            "deform attention: pos last dimension 3 refused");
        check(configure({-1, 14, 14, 384}, {-1, 196, 384}, {-1, 196, 384}, {12, 27, 27}, {-1, 196, 2}) != 0,
            "deform attention: 3-d pos refused");

        PluginFieldCollection const* aSerialized = aRuntime->getFieldsToSerialize();
        check(aSerialized->nbFields == 4 && intField(aSerialized, "heads") == 12 && intField(aSerialized, "groups") == 3
                && intField(aSerialized, "convention") == 1 && floatField(aSerialized, "scale") == aScale,
            "deform attention: serialises heads=12, groups=3, convention=1, scale=0.17677669");
        IPluginV3* aRestored = attention->createPlugin("attention", aSerialized, TensorRTPhase::kRUNTIME);
        check(aRestored != nullptr, "deform attention: recreated from serialised fields (runtime phase)");
        if (aRestored != nullptr)
        {
            auto* restoredRuntime
                = static_cast<IPluginV3OneRuntime*>(aRestored->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
            PluginFieldCollection const* again = restoredRuntime->getFieldsToSerialize();
            check(intField(again, "heads") == 12 && intField(again, "groups") == 3 && intField(again, "convention") == 1
                    && floatField(again, "scale") == aScale,
                "deform attention: the recreated plugin serialises the same fields");
        }
        IPluginV3* aAttached = aRuntime->attachToContext(nullptr);
        check(aAttached != nullptr && aAttached != attentionPlugin, "deform attention: attachToContext clones");
        delete aRestored;
        delete aAttached;
        delete attentionPlugin;
    }

    std::printf("%s: %d failure(s)\n", gFailures == 0 ? "PASSED" : "FAILED", gFailures);
    return gFailures == 0 ? 0 : 1;
}
