// libdat_ort_ops: the onnxruntime custom-op library of domain "dat" (contract: plugins/README.md).
// Built with g++ alone against the ABI declarations in ortAbi.h; loaded with
// SessionOptions.register_custom_ops_library(path), which calls RegisterCustomOps below.
// This file turns each OpDescriptor (exportedOps.cpp, cpuOnlyOps.cpp) into OrtCustomOp callbacks; it knows no op.
#include "ortOpDescriptor.h"

#include "../cpu/cpuKernels.h"
#include "../cpu/threadPool.h"

#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <stdexcept>

namespace dat
{
namespace ort
{

// ---- helpers shared by the op descriptions ------------------------------------------------------------------------

OrtStatus* describe(Api const& api, TensorView& view)
{
    OrtTensorTypeAndShapeInfo* info = nullptr;
    DAT_RETURN_IF_STATUS(api.getTensorTypeAndShape(view.value, &info));
    size_t rank = 0;
    OrtStatus* status = api.getDimensionsCount(info, &rank);
    if (status == nullptr)
    {
        view.dims.resize(rank);
        status = api.getDimensions(info, view.dims.data(), rank);
    }
    if (status == nullptr)
    {
        status = api.getTensorElementType(info, &view.elementType);
    }
    api.releaseTensorTypeAndShapeInfo(info);
    return status;
}

OrtStatus* readInput(Api const& api, OrtKernelContext* context, size_t index, TensorView& view)
{
    DAT_RETURN_IF_STATUS(api.kernelContextGetInput(context, index, &view.value));
    return describe(api, view);
}

OrtStatus* dataPointers(Api const& api, std::initializer_list<OrtValue const*> values, void** data)
{
    for (OrtValue const* value : values)
    {
        DAT_RETURN_IF_STATUS(api.getTensorMutableData(const_cast<OrtValue*>(value), data++));
    }
    return nullptr;
}

std::string shapeText(std::vector<int64_t> const& dims)
{
    std::string text = "(";
    for (size_t i = 0; i < dims.size(); ++i)
    {
        text += (i ? ", " : "") + std::to_string(dims[i]);
    }
    return text + ")";
}

OrtStatus* invalid(Api const& api, std::string const& message)
{
    return api.createStatus(kOrtInvalidArgument, message.c_str());
}

int64_t leadingRows(std::vector<int64_t> const& dims)
{
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < dims.size(); ++i)
    {
        rows *= dims[i];
    }
    return rows;
}

namespace
{

size_t attributeIndex(OpDescriptor const& op, char const* name, AttributeKind kind)
{
    for (size_t i = 0; i < op.attributes.size(); ++i)
    {
        if (op.attributes[i].kind == kind && std::strcmp(op.attributes[i].name, name) == 0)
        {
            return i;
        }
    }
    throw std::logic_error(std::string(op.name) + ": no attribute '" + name + "' of that kind in its description");
}

} // namespace

int64_t Kernel::integer(char const* name) const
{
    return ints[attributeIndex(*op, name, AttributeKind::kInt)];
}

float Kernel::real(char const* name) const
{
    return floats[attributeIndex(*op, name, AttributeKind::kFloat)];
}

namespace
{

// One registered (op, element types) combination. ORT picks the one whose input types match the graph.
struct DatCustomOp : OrtCustomOp
{
    OpDescriptor const* op;
    int32_t types[kTypeVars]; // element type of T1, T2, T3
};

DatCustomOp const& self(OrtCustomOp const* op)
{
    return *static_cast<DatCustomOp const*>(op);
}

char const* opName(OrtCustomOp const* op)
{
    return self(op).op->name;
}

char const* executionProvider(OrtCustomOp const*)
{
    return "CPUExecutionProvider";
}

size_t inputCount(OrtCustomOp const* op)
{
    return self(op).op->inputs.size();
}

int32_t inputType(OrtCustomOp const* op, size_t index)
{
    return self(op).types[static_cast<int>(self(op).op->inputs.at(index).type)];
}

size_t outputCount(OrtCustomOp const* op)
{
    return self(op).op->outputs.size();
}

int32_t outputType(OrtCustomOp const* op, size_t)
{
    return self(op).types[static_cast<int>(TypeVar::kT1)];
}

int32_t required(OrtCustomOp const*, size_t)
{
    return kOrtInputOutputRequired;
}

int32_t defaultMemory(OrtCustomOp const*, size_t)
{
    return kOrtMemTypeDefault;
}

int variadicMinArity(OrtCustomOp const*)
{
    return 1;
}

int variadicHomogeneity(OrtCustomOp const*)
{
    return 1;
}

// Reads every attribute of the description; a missing required one is an error that names it.
OrtStatus* readAttributes(Kernel& k, OrtKernelInfo const* info)
{
    std::vector<AttributeSpec> const& specs = k.op->attributes;
    k.ints.assign(specs.size(), 0);
    k.floats.assign(specs.size(), 0.f);
    for (size_t i = 0; i < specs.size(); ++i)
    {
        AttributeSpec const& spec = specs[i];
        bool const isInt = spec.kind == AttributeKind::kInt;
        OrtStatus* status = isInt ? k.api.kernelInfoGetAttributeInt64(info, spec.name, &k.ints[i])
                                  : k.api.kernelInfoGetAttributeFloat(info, spec.name, &k.floats[i]);
        if (status == nullptr)
        {
            continue;
        }
        k.api.releaseStatus(status);
        if (spec.required)
        {
            return invalid(k.api,
                std::string(k.op->name) + ": missing " + (isInt ? "int" : "float") + " attribute '" + spec.name + "'"
                    + spec.hint);
        }
        k.ints[i] = static_cast<int64_t>(spec.fallback);
        k.floats[i] = static_cast<float>(spec.fallback);
    }
    return nullptr;
}

OrtStatus* createKernel(OrtCustomOp const* op, OrtApi const* ortApi, OrtKernelInfo const* info, void** kernelOut)
{
    auto kernel = std::make_unique<Kernel>(Kernel{.api = Api(ortApi), .op = self(op).op, .ints = {}, .floats = {},
        .prepared = nullptr});
    try
    {
        DAT_RETURN_IF_STATUS(readAttributes(*kernel, info));
        if (kernel->op->prepare != nullptr)
        {
            DAT_RETURN_IF_STATUS(kernel->op->prepare(*kernel, info));
        }
    }
    catch (std::exception const& e)
    {
        return kernel->api.createStatus(kOrtFail, e.what());
    }
    *kernelOut = kernel.release();
    return nullptr;
}

// Set once by RegisterCustomOps: whether this onnxruntime has KernelContext_ParallelFor.
bool gOrtHasParallelFor = false;

// The session's intra-op pool as seen from one kernel call.
struct OrtPool
{
    Api const* api;
    OrtKernelContext const* context;
};

void runOrtChunk(void* chunkBody, size_t chunk)
{
    (*static_cast<std::function<void(int64_t)> const*>(chunkBody))(static_cast<int64_t>(chunk));
}

// cpu::ChunkRunner on the session's intra-op pool.
void runChunksOnOrtPool(void* poolPtr, int64_t chunks, std::function<void(int64_t)> const& chunkBody)
{
    auto const& pool = *static_cast<OrtPool const*>(poolPtr);
    void* body = const_cast<void*>(static_cast<void const*>(&chunkBody));
    OrtStatus* status = pool.api->kernelContextParallelFor(pool.context, runOrtChunk, static_cast<size_t>(chunks), 0, body);
    if (status != nullptr)
    {
        pool.api->releaseStatus(status);
        for (int64_t chunk = 0; chunk < chunks; ++chunk) // the pool refused: the same work on this thread
        {
            chunkBody(chunk);
        }
    }
}

OrtStatus* computeKernel(void* kernelPtr, OrtKernelContext* context)
{
    Kernel const& k = *static_cast<Kernel const*>(kernelPtr);
    OrtPool ortPool{&k.api, context};
    std::optional<cpu::ScopedChunkRunner> onOrtPool;
    if (gOrtHasParallelFor)
    {
        onOrtPool.emplace(runChunksOnOrtPool, &ortPool);
    }
    try
    {
        return k.op->compute(k, context);
    }
    catch (std::exception const& e)
    {
        return k.api.createStatus(kOrtFail, e.what());
    }
}

void destroyKernel(void* kernelPtr)
{
    delete static_cast<Kernel*>(kernelPtr);
}

DatCustomOp makeOp(OpDescriptor const& description, int32_t const (&types)[kTypeVars])
{
    DatCustomOp op{};
    op.version = kDatOrtApiVersion;
    op.CreateKernel = nullptr; // ORT uses CreateKernelV2 / KernelComputeV2 (version >= 16)
    op.GetName = opName;
    op.GetExecutionProviderType = executionProvider;
    op.GetInputType = inputType;
    op.GetInputTypeCount = inputCount;
    op.GetOutputType = outputType;
    op.GetOutputTypeCount = outputCount;
    op.KernelCompute = nullptr;
    op.KernelDestroy = destroyKernel;
    op.GetInputCharacteristic = required;
    op.GetOutputCharacteristic = required;
    op.GetInputMemoryType = defaultMemory;
    op.GetVariadicInputMinArity = variadicMinArity;
    op.GetVariadicInputHomogeneity = variadicHomogeneity;
    op.GetVariadicOutputMinArity = variadicMinArity;
    op.GetVariadicOutputHomogeneity = variadicHomogeneity;
    op.CreateKernelV2 = createKernel;
    op.KernelComputeV2 = computeKernel;
    op.InferOutputShapeFn = nullptr;
    op.op = &description;
    std::copy(std::begin(types), std::end(types), op.types);
    return op;
}

// Every description once per combination of the element types its type variables allow.
std::vector<DatCustomOp> const& registeredOps()
{
    static std::vector<DatCustomOp> const ops = [] {
        std::vector<DatCustomOp> list;
        for (auto const* table : {&exportedOps(), &cpuOnlyOps()})
        {
            for (OpDescriptor const& description : *table)
            {
                std::vector<int32_t> const& t1 = description.types[0];
                std::vector<int32_t> const t2 = description.types[1].empty() ? t1 : description.types[1];
                std::vector<int32_t> const t3 = description.types[2].empty() ? t1 : description.types[2];
                for (int32_t a : t1)
                {
                    for (int32_t b : t2)
                    {
                        for (int32_t c : t3)
                        {
                            bool const unusedVariation = (description.types[1].empty() && b != a)
                                || (description.types[2].empty() && c != a);
                            if (!unusedVariation)
                            {
                                list.push_back(makeOp(description, {a, b, c}));
                            }
                        }
                    }
                }
            }
        }
        return list;
    }();
    return ops;
}

} // namespace
} // namespace ort
} // namespace dat

extern "C" __attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(
    OrtSessionOptions* options, OrtApiBase const* apiBase)
{
    OrtApi const* ortApi = apiBase->GetApi(kDatOrtApiVersion);
    if (ortApi == nullptr)
    {
        std::fprintf(stderr, "libdat_ort_ops: onnxruntime %s does not provide ORT API version %u (need >= 1.16)\n",
            apiBase->GetVersionString(), kDatOrtApiVersion);
        return nullptr; // no API to create a status with; the session then reports the unknown op
    }
    dat::ort::Api api(ortApi);
    if (!dat::cpu::layerChoice().error.empty()) // a forced layer this CPU lacks: refuse rather than crash later
    {
        return api.createStatus(kOrtInvalidArgument, ("libdat_ort_ops: " + dat::cpu::layerChoice().error).c_str());
    }
    dat::ort::gOrtHasParallelFor = apiBase->GetApi(kDatOrtParallelForApiVersion) != nullptr;
    // One domain per SessionOptions; the domain must outlive every session that uses it, so it is never released.
    OrtCustomOpDomain* domain = nullptr;
    DAT_RETURN_IF_STATUS(api.createCustomOpDomain("dat", &domain));
    for (auto const& op : dat::ort::registeredOps())
    {
        DAT_RETURN_IF_STATUS(api.customOpDomainAdd(domain, &op));
    }
    return api.addCustomOpDomain(options, domain);
}

// Which CPU layer the kernels run and why (read by dat_deploy.native through ctypes, shown by `dat-deploy doctor`).
// dat_cpu_layer() is "" when DAT_DEPLOY_CPU_LAYER names a layer this CPU cannot run; the reason then says so.
extern "C" __attribute__((visibility("default"))) char const* dat_cpu_layer()
{
    return dat::cpu::layerChoice().layer;
}

extern "C" __attribute__((visibility("default"))) char const* dat_cpu_layer_reason()
{
    auto const& choice = dat::cpu::layerChoice();
    return choice.error.empty() ? choice.reason.c_str() : choice.error.c_str();
}

// The layers this CPU can run, widest last, e.g. "portable,avx2,avx512".
extern "C" __attribute__((visibility("default"))) char const* dat_cpu_layers_supported()
{
    return dat::cpu::layerChoice().supported.c_str();
}
