// libdat_ort_ops: the onnxruntime custom-op library of domain "dat" (contract: plugins/README.md).
// Built with g++ alone against the ABI declarations in ortAbi.h; loaded with
// SessionOptions.register_custom_ops_library(path), which calls RegisterCustomOps below.
#include "ortAbi.h"

#include "../cpu/addLayerNormCpu.h"
#include "../cpu/biasGeluCpu.h"
#include "../cpu/datSamplingCpu.h"
#include "../cpu/threadPool.h"
#include "../cpu/deformAttentionCpu.h"
#include "../cpu/gemmCpu.h"
#include "../cpu/windowAttentionCpu.h"

#include <cstdio>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dat
{
namespace ort
{
namespace
{

enum class OpKind
{
    kDeformSample,
    kRelPosBias,
    kWindowAttention,
    kDeformAttention,
    kBiasGelu, // kBiasGelu, kAddLayerNorm: onnxruntime only, inserted by dat_deploy.runtime, never exported
    kAddLayerNorm,
    kGemm, // onnxruntime only as well
};

// One registered (op, dtype combination). ORT picks the kernel whose input types match the graph.
struct DatCustomOp : OrtCustomOp
{
    OpKind kind;
    int32_t dataType; // x (DeformSample) / table and x (RelPosBias) / qkv (WindowAttention); also the output type
    int32_t posType;  // pos, or bias (WindowAttention)
    int32_t tableType; // DeformAttention's table (its data type is q's, k's, v's and the output's)
};

struct Kernel
{
    Api api;
    OpKind kind;
    int64_t groups;
    int64_t convention;
    // DATWindowAttention, DATDeformAttention (heads, scale; also groups and convention)
    int64_t heads;
    int64_t window;
    int64_t shift;
    float scale;
    float epsilon; // DATAddLayerNorm
    std::shared_ptr<cpu::PackedGemmWeights const> weights; // DATGemm: its weight, packed when the kernel is made
    bool gelu = false;                                     // DATGemm: attribute gelu = 1, the exact GELU after the bias
};

struct TensorView
{
    OrtValue const* value{nullptr};
    std::vector<int64_t> dims;
    int32_t elementType{kOrtElementUndefined};
};

#define DAT_RETURN_IF_STATUS(expr)                                                                                     \
    do                                                                                                                 \
    {                                                                                                                  \
        OrtStatus* datStatus_ = (expr);                                                                                \
        if (datStatus_ != nullptr)                                                                                     \
        {                                                                                                              \
            return datStatus_;                                                                                         \
        }                                                                                                              \
    } while (0)

// Fills view's dims and element type from view.value.
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

// data[i] = the data of values[i] (inputs and outputs alike: onnxruntime hands out only mutable pointers).
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

DType toDType(int32_t elementType)
{
    return elementType == kOrtElementFloat16 ? DType::kFloat16 : DType::kFloat32;
}

OrtStatus* checkPos(Api const& api, char const* op, TensorView const& pos, int64_t batch, int64_t groups)
{
    if (pos.dims.size() != 4 || pos.dims[3] != 2 || pos.dims[0] != batch * groups)
    {
        return invalid(api,
            std::string(op) + ": pos must be (B*groups, Hk, Wk, 2) = (" + std::to_string(batch * groups)
                + ", Hk, Wk, 2) for B=" + std::to_string(batch) + ", groups=" + std::to_string(groups) + "; got "
                + shapeText(pos.dims));
    }
    return nullptr;
}

OrtStatus* computeDeformSample(Kernel const& k, OrtKernelContext* context)
{
    TensorView x, pos;
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 0, x));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 1, pos));
    if (x.dims.size() != 4)
    {
        return invalid(k.api, "DATDeformSample: x must be (B, C, H, W); got " + shapeText(x.dims));
    }
    if (x.dims[1] % k.groups != 0)
    {
        return invalid(k.api,
            "DATDeformSample: channels " + std::to_string(x.dims[1]) + " not divisible by groups "
                + std::to_string(k.groups));
    }
    DAT_RETURN_IF_STATUS(checkPos(k.api, "DATDeformSample", pos, x.dims[0], k.groups));
    int64_t const outDims[4] = {x.dims[0], x.dims[1], pos.dims[1], pos.dims[2]};
    OrtValue* out = nullptr;
    DAT_RETURN_IF_STATUS(k.api.kernelContextGetOutput(context, 0, outDims, 4, &out));
    void* data[3] = {};
    DAT_RETURN_IF_STATUS(dataPointers(k.api, {x.value, pos.value, out}, data));
    DeformSampleDims dims{x.dims[0], x.dims[1], x.dims[2], x.dims[3], k.groups, pos.dims[1], pos.dims[2]};
    cpu::deformSample(dims, data[0], toDType(x.elementType), data[1], toDType(pos.elementType), data[2]);
    return nullptr;
}

// Rows of a tensor seen as (rows, last axis).
int64_t leadingRows(std::vector<int64_t> const& dims)
{
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < dims.size(); ++i)
    {
        rows *= dims[i];
    }
    return rows;
}

OrtStatus* computeBiasGelu(Kernel const& k, OrtKernelContext* context)
{
    TensorView x, bias;
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 0, x));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 1, bias));
    int64_t const cols = x.dims.empty() ? 0 : x.dims.back();
    if (x.dims.empty() || bias.dims.size() != 1 || bias.dims[0] != cols)
    {
        return invalid(k.api,
            "DATBiasGelu: bias must be 1-D with the size of x's last axis; got x " + shapeText(x.dims) + ", bias "
                + shapeText(bias.dims));
    }
    int64_t const rows = leadingRows(x.dims);
    OrtValue* out = nullptr;
    DAT_RETURN_IF_STATUS(k.api.kernelContextGetOutput(context, 0, x.dims.data(), x.dims.size(), &out));
    void* data[3] = {};
    DAT_RETURN_IF_STATUS(dataPointers(k.api, {x.value, bias.value, out}, data));
    cpu::biasGelu(static_cast<float const*>(data[0]), static_cast<float const*>(data[1]), static_cast<float*>(data[2]),
        rows, cols);
    return nullptr;
}

OrtStatus* computeAddLayerNorm(Kernel const& k, OrtKernelContext* context)
{
    TensorView a, b, gamma, beta;
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 0, a));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 1, b));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 2, gamma));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 3, beta));
    int64_t const cols = a.dims.empty() ? 0 : a.dims.back();
    if (a.dims.empty() || a.dims != b.dims)
    {
        return invalid(k.api,
            "DATAddLayerNorm: a and b must have one shape of rank >= 1; got a " + shapeText(a.dims) + ", b "
                + shapeText(b.dims));
    }
    if (gamma.dims != std::vector<int64_t>{cols} || beta.dims != std::vector<int64_t>{cols})
    {
        return invalid(k.api,
            "DATAddLayerNorm: gamma and beta must be 1-D of a's last axis " + std::to_string(cols) + "; got gamma "
                + shapeText(gamma.dims) + ", beta " + shapeText(beta.dims));
    }
    int64_t const rows = leadingRows(a.dims);
    OrtValue* sum = nullptr;
    OrtValue* y = nullptr;
    DAT_RETURN_IF_STATUS(k.api.kernelContextGetOutput(context, 0, a.dims.data(), a.dims.size(), &sum));
    DAT_RETURN_IF_STATUS(k.api.kernelContextGetOutput(context, 1, a.dims.data(), a.dims.size(), &y));
    void* data[6] = {};
    DAT_RETURN_IF_STATUS(dataPointers(k.api, {a.value, b.value, gamma.value, beta.value, sum, y}, data));
    cpu::addLayerNorm(static_cast<float const*>(data[0]), static_cast<float const*>(data[1]),
        static_cast<float const*>(data[2]), static_cast<float const*>(data[3]), k.epsilon, static_cast<float*>(data[4]),
        static_cast<float*>(data[5]), rows, cols);
    return nullptr;
}

OrtStatus* computeGemm(Kernel const& k, OrtKernelContext* context)
{
    TensorView x, bias;
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 0, x));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 2, bias));
    cpu::PackedGemmWeights const& weights = *k.weights;
    if (x.dims.empty() || x.dims.back() != weights.k)
    {
        return invalid(k.api,
            "DATGemm: x's last axis must be the weight's K = " + std::to_string(weights.k) + "; got x "
                + shapeText(x.dims));
    }
    if (bias.dims != std::vector<int64_t>{weights.n})
    {
        return invalid(k.api,
            "DATGemm: bias must be 1-D of the weight's N = " + std::to_string(weights.n) + "; got "
                + shapeText(bias.dims));
    }
    std::vector<int64_t> outDims = x.dims;
    outDims.back() = weights.n;
    OrtValue* out = nullptr;
    DAT_RETURN_IF_STATUS(k.api.kernelContextGetOutput(context, 0, outDims.data(), outDims.size(), &out));
    void* data[3] = {};
    DAT_RETURN_IF_STATUS(dataPointers(k.api, {x.value, bias.value, out}, data));
    cpu::gemm(static_cast<float const*>(data[0]), leadingRows(x.dims), weights, static_cast<float const*>(data[1]),
        k.gelu, static_cast<float*>(data[2]));
    return nullptr;
}

OrtStatus* computeRelPosBias(Kernel const& k, OrtKernelContext* context)
{
    TensorView table, pos, x;
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 0, table));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 1, pos));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 2, x));
    if (table.dims.size() != 3 || table.dims[0] % k.groups != 0)
    {
        return invalid(k.api,
            "DATRelPosBias: table must be (heads, Th, Tw) with heads divisible by groups "
                + std::to_string(k.groups) + "; got " + shapeText(table.dims));
    }
    if (x.dims.size() != 4)
    {
        return invalid(k.api, "DATRelPosBias: x must be (B, C, H, W); got " + shapeText(x.dims));
    }
    DAT_RETURN_IF_STATUS(checkPos(k.api, "DATRelPosBias", pos, x.dims[0], k.groups));
    int64_t const outDims[3] = {x.dims[0] * table.dims[0], x.dims[2] * x.dims[3], pos.dims[1] * pos.dims[2]};
    OrtValue* out = nullptr;
    DAT_RETURN_IF_STATUS(k.api.kernelContextGetOutput(context, 0, outDims, 3, &out));
    void* data[3] = {};
    DAT_RETURN_IF_STATUS(dataPointers(k.api, {table.value, pos.value, out}, data));
    RelPosBiasDims dims{x.dims[0], table.dims[0], table.dims[1], table.dims[2], k.groups, pos.dims[1],
        pos.dims[2], x.dims[2], x.dims[3], static_cast<int32_t>(k.convention)};
    cpu::relPosBias(dims, data[0], toDType(table.elementType), data[1], toDType(pos.elementType), data[2]);
    return nullptr;
}

OrtStatus* computeWindowAttention(Kernel const& k, OrtKernelContext* context)
{
    TensorView qkv, bias;
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 0, qkv));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 1, bias));
    std::string const op = "DATWindowAttention";
    if (qkv.dims.size() != 4 || qkv.dims[3] % 3 != 0)
    {
        return invalid(k.api, op + ": qkv must be (B, H, W, 3C) (rank 4, last dim divisible by 3); got " + shapeText(qkv.dims));
    }
    int64_t const channels = qkv.dims[3] / 3;
    if (channels % k.heads != 0)
    {
        return invalid(k.api,
            op + ": C = " + std::to_string(channels) + " (qkv " + shapeText(qkv.dims) + ", last dim 3C) not divisible by heads = "
                + std::to_string(k.heads));
    }
    if (qkv.dims[1] % k.window != 0 || qkv.dims[2] % k.window != 0)
    {
        return invalid(k.api,
            op + ": H and W must be divisible by window = " + std::to_string(k.window) + "; qkv is (B, H, W, 3C) = "
                + shapeText(qkv.dims));
    }
    WindowAttentionDims dims{qkv.dims[0], qkv.dims[1], qkv.dims[2], channels, k.heads, k.window, k.shift, 1, k.scale};
    int64_t const tokens = dims.tokens();
    int64_t const windows = dims.windowsPerImage();
    bool const biasOk = bias.dims.size() == 4 && (bias.dims[0] == 1 || bias.dims[0] == windows)
        && bias.dims[1] == k.heads && bias.dims[2] == tokens && bias.dims[3] == tokens;
    if (!biasOk)
    {
        std::string const nb = windows == 1 ? "1" : "1 or " + std::to_string(windows);
        return invalid(k.api,
            op + ": bias must be (Nb, heads, T, T) = (" + nb + ", " + std::to_string(k.heads) + ", "
                + std::to_string(tokens) + ", " + std::to_string(tokens) + ") for qkv " + shapeText(qkv.dims)
                + ", heads = " + std::to_string(k.heads) + ", window = " + std::to_string(k.window) + "; got "
                + shapeText(bias.dims));
    }
    dims.biasWindows = bias.dims[0];
    int64_t const outDims[4] = {qkv.dims[0], qkv.dims[1], qkv.dims[2], channels};
    OrtValue* out = nullptr;
    DAT_RETURN_IF_STATUS(k.api.kernelContextGetOutput(context, 0, outDims, 4, &out));
    void* data[3] = {};
    DAT_RETURN_IF_STATUS(dataPointers(k.api, {qkv.value, bias.value, out}, data));
    cpu::windowAttention(dims, data[0], toDType(qkv.elementType), data[1], toDType(bias.elementType), data[2]);
    return nullptr;
}

OrtStatus* computeDeformAttention(Kernel const& k, OrtKernelContext* context)
{
    TensorView q, key, value, table, pos;
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 0, q));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 1, key));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 2, value));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 3, table));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 4, pos));
    std::string const op = "DATDeformAttention";
    std::string const attrs = "heads = " + std::to_string(k.heads) + ", groups = " + std::to_string(k.groups);
    if (q.dims.size() != 4)
    {
        return invalid(k.api, op + ": q must be (B, H, W, C) (rank 4); got " + shapeText(q.dims));
    }
    int64_t const batch = q.dims[0];
    int64_t const channels = q.dims[3];
    if (channels % k.heads != 0)
    {
        return invalid(k.api,
            op + ": C = " + std::to_string(channels) + " (q " + shapeText(q.dims) + ") not divisible by heads = "
                + std::to_string(k.heads));
    }
    if (pos.dims.size() != 4 || pos.dims[0] != batch * k.groups || pos.dims[3] != 2)
    {
        return invalid(k.api,
            op + ": pos must be (B*groups, Hk, Wk, 2) = (" + std::to_string(batch * k.groups) + ", Hk, Wk, 2) for q "
                + shapeText(q.dims) + ", groups = " + std::to_string(k.groups) + "; got " + shapeText(pos.dims));
    }
    int64_t const keys = pos.dims[1] * pos.dims[2];
    std::string const kvShape
        = "(" + std::to_string(batch) + ", " + std::to_string(keys) + ", " + std::to_string(channels) + ")";
    for (auto const* tensor : {&key, &value})
    {
        if (tensor->dims.size() != 3 || tensor->dims[0] != batch || tensor->dims[1] != keys || tensor->dims[2] != channels)
        {
            return invalid(k.api,
                op + ": " + (tensor == &key ? "k" : "v") + " must be (B, Nk, C) = " + kvShape + " for q "
                    + shapeText(q.dims) + " and pos " + shapeText(pos.dims) + " (Nk = Hk*Wk); got "
                    + shapeText(tensor->dims));
        }
    }
    if (table.dims.size() != 3 || table.dims[0] != k.heads)
    {
        return invalid(k.api,
            op + ": table must be (heads, Th, Tw) = (" + std::to_string(k.heads) + ", Th, Tw) for " + attrs + "; got "
                + shapeText(table.dims));
    }
    int64_t const outDims[4] = {q.dims[0], q.dims[1], q.dims[2], channels};
    OrtValue* out = nullptr;
    DAT_RETURN_IF_STATUS(k.api.kernelContextGetOutput(context, 0, outDims, 4, &out));
    void* data[6] = {};
    DAT_RETURN_IF_STATUS(dataPointers(k.api, {q.value, key.value, value.value, table.value, pos.value, out}, data));
    DeformAttentionDims dims{batch, q.dims[1], q.dims[2], channels, pos.dims[1], pos.dims[2], k.heads, k.groups,
        table.dims[1], table.dims[2], static_cast<int32_t>(k.convention), k.scale};
    cpu::deformAttention(dims, data[0], data[1], data[2], toDType(q.elementType), data[3], toDType(table.elementType),
        data[4], toDType(pos.elementType), data[5]);
    return nullptr;
}

// ---- OrtCustomOp callbacks ------------------------------------------------------------------------------------------

DatCustomOp const& self(OrtCustomOp const* op)
{
    return *static_cast<DatCustomOp const*>(op);
}

char const* opName(OrtCustomOp const* op)
{
    switch (self(op).kind)
    {
    case OpKind::kDeformSample: return "DATDeformSample";
    case OpKind::kRelPosBias: return "DATRelPosBias";
    case OpKind::kWindowAttention: return "DATWindowAttention";
    case OpKind::kDeformAttention: return "DATDeformAttention";
    case OpKind::kBiasGelu: return "DATBiasGelu";
    case OpKind::kAddLayerNorm: return "DATAddLayerNorm";
    case OpKind::kGemm: return "DATGemm";
    }
    return "";
}

char const* executionProvider(OrtCustomOp const*)
{
    return "CPUExecutionProvider";
}

size_t inputCount(OrtCustomOp const* op)
{
    switch (self(op).kind)
    {
    case OpKind::kRelPosBias: return 3;
    case OpKind::kDeformAttention: return 5;
    case OpKind::kAddLayerNorm: return 4;
    case OpKind::kGemm: return 3;
    default: return 2;
    }
}

int32_t inputType(OrtCustomOp const* op, size_t index)
{
    // DeformSample: (x, pos); RelPosBias: (table, pos, x); WindowAttention: (qkv, bias);
    // DeformAttention: (q, k, v, table, pos); BiasGelu: (x, bias); AddLayerNorm: (a, b, gamma, beta);
    // Gemm: (x, weight, bias).
    if (self(op).kind == OpKind::kDeformAttention)
    {
        return index == 4 ? self(op).posType : index == 3 ? self(op).tableType : self(op).dataType;
    }
    return index == 1 ? self(op).posType : self(op).dataType;
}

size_t outputCount(OrtCustomOp const* op)
{
    return self(op).kind == OpKind::kAddLayerNorm ? 2 : 1; // (sum, y)
}

int32_t outputType(OrtCustomOp const* op, size_t)
{
    return self(op).dataType;
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

// Reads the int attributes `names` and the float attribute "scale" of an attention op; a missing one
// is an error that names it.
OrtStatus* readAttentionAttributes(
    Api const& api, OrtKernelInfo const* info, char const* op, char const* const (&names)[3], int64_t (&ints)[3], float& scale)
{
    for (int i = 0; i < 3; ++i)
    {
        OrtStatus* status = api.kernelInfoGetAttributeInt64(info, names[i], &ints[i]);
        if (status != nullptr)
        {
            api.releaseStatus(status);
            return invalid(api, std::string(op) + ": missing int attribute '" + names[i] + "'");
        }
    }
    OrtStatus* status = api.kernelInfoGetAttributeFloat(info, "scale", &scale);
    if (status != nullptr)
    {
        api.releaseStatus(status);
        return invalid(api, std::string(op) + ": missing float attribute 'scale'");
    }
    return nullptr;
}

OrtStatus* createWindowAttentionKernel(Api const& api, OrtKernelInfo const* info, void** kernelOut)
{
    char const* const op = "DATWindowAttention";
    int64_t ints[3] = {0, 0, 0}; // heads, window, shift
    char const* const names[3] = {"heads", "window", "shift"};
    float scale = 0.f;
    DAT_RETURN_IF_STATUS(readAttentionAttributes(api, info, op, names, ints, scale));
    int64_t const heads = ints[0], window = ints[1], shift = ints[2];
    if (heads < 1 || window < 1)
    {
        return invalid(api,
            std::string(op) + ": attributes heads and window must be >= 1, got heads = " + std::to_string(heads)
                + ", window = " + std::to_string(window));
    }
    if (shift < 0 || shift >= window)
    {
        return invalid(api,
            std::string(op) + ": attribute shift must be in [0, window) = [0, " + std::to_string(window) + "), got "
                + std::to_string(shift));
    }
    *kernelOut = new Kernel{api, OpKind::kWindowAttention, 0, 0, heads, window, shift, scale, 0.f, nullptr};
    return nullptr;
}

OrtStatus* createDeformAttentionKernel(Api const& api, OrtKernelInfo const* info, void** kernelOut)
{
    char const* const op = "DATDeformAttention";
    int64_t ints[3] = {0, 0, 0}; // heads, groups, convention
    char const* const names[3] = {"heads", "groups", "convention"};
    float scale = 0.f;
    DAT_RETURN_IF_STATUS(readAttentionAttributes(api, info, op, names, ints, scale));
    int64_t const heads = ints[0], groups = ints[1], convention = ints[2];
    if (heads < 1 || groups < 1)
    {
        return invalid(api,
            std::string(op) + ": attributes heads and groups must be >= 1, got heads = " + std::to_string(heads)
                + ", groups = " + std::to_string(groups));
    }
    if (heads % groups != 0)
    {
        return invalid(api,
            std::string(op) + ": attribute groups = " + std::to_string(groups) + " must divide heads = "
                + std::to_string(heads));
    }
    if (convention != 0 && convention != 1)
    {
        return invalid(api,
            std::string(op) + ": attribute convention must be 0 (DAT) or 1 (DAT++), got " + std::to_string(convention));
    }
    *kernelOut = new Kernel{api, OpKind::kDeformAttention, groups, convention, heads, 0, 0, scale, 0.f, nullptr};
    return nullptr;
}

// DATGemm packs its weight once, here: it must be a constant initializer (what onnxruntime's own Gemm prepacks).
OrtStatus* createGemmKernel(Api const& api, OrtKernelInfo const* info, void** kernelOut)
{
    int64_t gelu = 0; // optional
    OrtStatus* status = api.kernelInfoGetAttributeInt64(info, "gelu", &gelu);
    if (status != nullptr)
    {
        api.releaseStatus(status);
        gelu = 0;
    }
    if (gelu != 0 && gelu != 1)
    {
        return invalid(api, "DATGemm: attribute gelu must be 0 or 1, got " + std::to_string(gelu));
    }
    int isConstant = 0;
    TensorView weight;
    DAT_RETURN_IF_STATUS(api.kernelInfoGetConstantInputTensor(info, 1, &isConstant, &weight.value));
    if (!isConstant || weight.value == nullptr)
    {
        return invalid(api, "DATGemm: the weight (input 1) must be a constant initializer of the graph");
    }
    DAT_RETURN_IF_STATUS(describe(api, weight));
    if (weight.dims.size() != 2 || weight.elementType != kOrtElementFloat)
    {
        return invalid(api, "DATGemm: the weight must be fp32 (N, K); got shape " + shapeText(weight.dims));
    }
    void* data = nullptr;
    DAT_RETURN_IF_STATUS(dataPointers(api, {weight.value}, &data));
    auto packed = std::make_shared<cpu::PackedGemmWeights const>(
        cpu::packGemmWeights(static_cast<float const*>(data), weight.dims[0], weight.dims[1]));
    *kernelOut = new Kernel{api, OpKind::kGemm, 0, 0, 0, 0, 0, 0.f, 0.f, std::move(packed), gelu == 1};
    return nullptr;
}

OrtStatus* createKernel(OrtCustomOp const* op, OrtApi const* ortApi, OrtKernelInfo const* info, void** kernelOut)
{
    Api api(ortApi);
    if (self(op).kind == OpKind::kWindowAttention)
    {
        return createWindowAttentionKernel(api, info, kernelOut);
    }
    if (self(op).kind == OpKind::kDeformAttention)
    {
        return createDeformAttentionKernel(api, info, kernelOut);
    }
    if (self(op).kind == OpKind::kBiasGelu)
    {
        *kernelOut = new Kernel{api, OpKind::kBiasGelu, 0, 0, 0, 0, 0, 0.f, 0.f, nullptr};
        return nullptr;
    }
    if (self(op).kind == OpKind::kAddLayerNorm)
    {
        float epsilon = 0.f;
        OrtStatus* status = api.kernelInfoGetAttributeFloat(info, "epsilon", &epsilon);
        if (status != nullptr)
        {
            api.releaseStatus(status);
            return invalid(api, "DATAddLayerNorm: missing float attribute 'epsilon'");
        }
        *kernelOut = new Kernel{api, OpKind::kAddLayerNorm, 0, 0, 0, 0, 0, 0.f, epsilon, nullptr};
        return nullptr;
    }
    if (self(op).kind == OpKind::kGemm)
    {
        return createGemmKernel(api, info, kernelOut);
    }
    int64_t groups = 0;
    OrtStatus* status = api.kernelInfoGetAttributeInt64(info, "groups", &groups);
    if (status != nullptr)
    {
        api.releaseStatus(status);
        return invalid(api, std::string(opName(op)) + ": missing int attribute 'groups'");
    }
    if (groups < 1)
    {
        return invalid(api, std::string(opName(op)) + ": attribute groups must be >= 1, got " + std::to_string(groups));
    }
    int64_t convention = 0; // only read by DATRelPosBias
    if (self(op).kind == OpKind::kRelPosBias)
    {
        status = api.kernelInfoGetAttributeInt64(info, "convention", &convention);
        if (status != nullptr)
        {
            api.releaseStatus(status);
            return invalid(api, "DATRelPosBias: missing int attribute 'convention' (0 = DAT, 1 = DAT++)");
        }
        if (convention != 0 && convention != 1)
        {
            return invalid(api,
                "DATRelPosBias: attribute convention must be 0 (DAT) or 1 (DAT++), got " + std::to_string(convention));
        }
    }
    *kernelOut = new Kernel{api, self(op).kind, groups, convention, 0, 0, 0, 0.f, 0.f, nullptr};
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
        switch (k.kind)
        {
        case OpKind::kDeformSample: return computeDeformSample(k, context);
        case OpKind::kRelPosBias: return computeRelPosBias(k, context);
        case OpKind::kWindowAttention: return computeWindowAttention(k, context);
        case OpKind::kDeformAttention: return computeDeformAttention(k, context);
        case OpKind::kBiasGelu: return computeBiasGelu(k, context);
        case OpKind::kAddLayerNorm: return computeAddLayerNorm(k, context);
        case OpKind::kGemm: return computeGemm(k, context);
        }
        return k.api.createStatus(kOrtFail, "libdat_ort_ops: unknown op");
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

DatCustomOp makeOp(OpKind kind, int32_t dataType, int32_t posType, int32_t tableType)
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
    op.kind = kind;
    op.dataType = dataType;
    op.posType = posType;
    op.tableType = tableType;
    return op;
}

std::vector<DatCustomOp>& registeredOps()
{
    // Every (data, pos) dtype pair: fp16 graphs keep pos in fp32 (coordinates stay fp32); for
    // DATWindowAttention the pair is (qkv, bias).
    static std::vector<DatCustomOp> ops = [] {
        std::vector<DatCustomOp> list;
        int32_t const types[2] = {kOrtElementFloat, kOrtElementFloat16};
        for (OpKind kind : {OpKind::kDeformSample, OpKind::kRelPosBias, OpKind::kWindowAttention})
        {
            for (int32_t data : types)
            {
                for (int32_t pos : types)
                {
                    list.push_back(makeOp(kind, data, pos, data));
                }
            }
        }
        // DATDeformAttention: every (data, table, pos) triple.
        for (int32_t data : types)
        {
            for (int32_t table : types)
            {
                for (int32_t pos : types)
                {
                    list.push_back(makeOp(OpKind::kDeformAttention, data, pos, table));
                }
            }
        }
        for (OpKind kind : {OpKind::kBiasGelu, OpKind::kAddLayerNorm, OpKind::kGemm}) // fp32 only
        {
            list.push_back(makeOp(kind, kOrtElementFloat, kOrtElementFloat, kOrtElementFloat));
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
    dat::ort::gOrtHasParallelFor = apiBase->GetApi(kDatOrtParallelForApiVersion) != nullptr;
    // One domain per SessionOptions; the domain must outlive every session that uses it, so it is never released.
    OrtCustomOpDomain* domain = nullptr;
    DAT_RETURN_IF_STATUS(api.createCustomOpDomain("dat", &domain));
    for (auto& op : dat::ort::registeredOps())
    {
        DAT_RETURN_IF_STATUS(api.customOpDomainAdd(domain, &op));
    }
    return api.addCustomOpDomain(options, domain);
}
