// The ops of the exported contract (plugins/README.md): what `dat-deploy export --flavor plugin` writes and
// the TensorRT plugins implement too. fp32 and fp16 data; sampling coordinates in either.
#include "ortOpDescriptor.h"

#include "../common/datSamplingTypes.h"
#include "../cpu/cpuKernels.h"

#include <string>

namespace dat
{
namespace ort
{
namespace
{

std::vector<int32_t> const kFloatTypes = {kOrtElementFloat, kOrtElementFloat16};

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

OrtStatus* checkGroups(Kernel& k, OrtKernelInfo const*)
{
    int64_t const groups = k.integer("groups");
    if (groups < 1)
    {
        return invalid(k.api, std::string(k.op->name) + ": attribute groups must be >= 1, got " + std::to_string(groups));
    }
    return nullptr;
}

OrtStatus* checkConvention(Kernel const& k)
{
    int64_t const convention = k.integer("convention");
    if (convention != 0 && convention != 1)
    {
        return invalid(k.api,
            std::string(k.op->name) + ": attribute convention must be 0 (DAT) or 1 (DAT++), got "
                + std::to_string(convention));
    }
    return nullptr;
}

// ---- DATDeformSample ----------------------------------------------------------------------------------------------

OrtStatus* computeDeformSample(Kernel const& k, OrtKernelContext* context)
{
    int64_t const groups = k.integer("groups");
    TensorView x, pos;
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 0, x));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 1, pos));
    if (x.dims.size() != 4)
    {
        return invalid(k.api, "DATDeformSample: x must be (B, C, H, W); got " + shapeText(x.dims));
    }
    if (x.dims[1] % groups != 0)
    {
        return invalid(k.api,
            "DATDeformSample: channels " + std::to_string(x.dims[1]) + " not divisible by groups "
                + std::to_string(groups));
    }
    DAT_RETURN_IF_STATUS(checkPos(k.api, "DATDeformSample", pos, x.dims[0], groups));
    int64_t const outDims[4] = {x.dims[0], x.dims[1], pos.dims[1], pos.dims[2]};
    OrtValue* out = nullptr;
    DAT_RETURN_IF_STATUS(k.api.kernelContextGetOutput(context, 0, outDims, 4, &out));
    void* data[3] = {};
    DAT_RETURN_IF_STATUS(dataPointers(k.api, {x.value, pos.value, out}, data));
    DeformSampleDims const dims{.batch = x.dims[0], .channels = x.dims[1], .height = x.dims[2], .width = x.dims[3],
        .groups = groups, .keyH = pos.dims[1], .keyW = pos.dims[2]};
    cpu::kernels().deformSample(dims, data[0], toDType(x.elementType), data[1], toDType(pos.elementType), data[2]);
    return nullptr;
}

// ---- DATRelPosBias ------------------------------------------------------------------------------------------------

OrtStatus* prepareRelPosBias(Kernel& k, OrtKernelInfo const* info)
{
    DAT_RETURN_IF_STATUS(checkGroups(k, info));
    return checkConvention(k);
}

OrtStatus* computeRelPosBias(Kernel const& k, OrtKernelContext* context)
{
    int64_t const groups = k.integer("groups");
    TensorView table, pos, x;
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 0, table));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 1, pos));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 2, x));
    if (table.dims.size() != 3 || table.dims[0] % groups != 0)
    {
        return invalid(k.api,
            "DATRelPosBias: table must be (heads, Th, Tw) with heads divisible by groups " + std::to_string(groups)
                + "; got " + shapeText(table.dims));
    }
    if (x.dims.size() != 4)
    {
        return invalid(k.api, "DATRelPosBias: x must be (B, C, H, W); got " + shapeText(x.dims));
    }
    DAT_RETURN_IF_STATUS(checkPos(k.api, "DATRelPosBias", pos, x.dims[0], groups));
    int64_t const outDims[3] = {x.dims[0] * table.dims[0], x.dims[2] * x.dims[3], pos.dims[1] * pos.dims[2]};
    OrtValue* out = nullptr;
    DAT_RETURN_IF_STATUS(k.api.kernelContextGetOutput(context, 0, outDims, 3, &out));
    void* data[3] = {};
    DAT_RETURN_IF_STATUS(dataPointers(k.api, {table.value, pos.value, out}, data));
    RelPosBiasDims const dims{.batch = x.dims[0], .heads = table.dims[0], .tableH = table.dims[1],
        .tableW = table.dims[2], .groups = groups, .keyH = pos.dims[1], .keyW = pos.dims[2], .queryH = x.dims[2],
        .queryW = x.dims[3], .convention = static_cast<int32_t>(k.integer("convention"))};
    cpu::kernels().relPosBias(dims, data[0], toDType(table.elementType), data[1], toDType(pos.elementType), data[2]);
    return nullptr;
}

// ---- DATWindowAttention -------------------------------------------------------------------------------------------

OrtStatus* prepareWindowAttention(Kernel& k, OrtKernelInfo const*)
{
    std::string const op = k.op->name;
    int64_t const heads = k.integer("heads"), window = k.integer("window"), shift = k.integer("shift");
    if (heads < 1 || window < 1)
    {
        return invalid(k.api,
            op + ": attributes heads and window must be >= 1, got heads = " + std::to_string(heads)
                + ", window = " + std::to_string(window));
    }
    if (shift < 0 || shift >= window)
    {
        return invalid(k.api,
            op + ": attribute shift must be in [0, window) = [0, " + std::to_string(window) + "), got "
                + std::to_string(shift));
    }
    return nullptr;
}

OrtStatus* computeWindowAttention(Kernel const& k, OrtKernelContext* context)
{
    int64_t const heads = k.integer("heads"), window = k.integer("window");
    TensorView qkv, bias;
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 0, qkv));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 1, bias));
    std::string const op = "DATWindowAttention";
    if (qkv.dims.size() != 4 || qkv.dims[3] % 3 != 0)
    {
        return invalid(k.api, op + ": qkv must be (B, H, W, 3C) (rank 4, last dim divisible by 3); got " + shapeText(qkv.dims));
    }
    int64_t const channels = qkv.dims[3] / 3;
    if (channels % heads != 0)
    {
        return invalid(k.api,
            op + ": C = " + std::to_string(channels) + " (qkv " + shapeText(qkv.dims) + ", last dim 3C) not divisible by heads = "
                + std::to_string(heads));
    }
    if (qkv.dims[1] % window != 0 || qkv.dims[2] % window != 0)
    {
        return invalid(k.api,
            op + ": H and W must be divisible by window = " + std::to_string(window) + "; qkv is (B, H, W, 3C) = "
                + shapeText(qkv.dims));
    }
    WindowAttentionDims dims{.batch = qkv.dims[0], .height = qkv.dims[1], .width = qkv.dims[2], .channels = channels,
        .heads = heads, .window = window, .shift = k.integer("shift"), .biasWindows = 1, .scale = k.real("scale")};
    int64_t const tokens = dims.tokens();
    int64_t const windows = dims.windowsPerImage();
    bool const biasOk = bias.dims.size() == 4 && (bias.dims[0] == 1 || bias.dims[0] == windows)
        && bias.dims[1] == heads && bias.dims[2] == tokens && bias.dims[3] == tokens;
    if (!biasOk)
    {
        std::string const nb = windows == 1 ? "1" : "1 or " + std::to_string(windows);
        return invalid(k.api,
            op + ": bias must be (Nb, heads, T, T) = (" + nb + ", " + std::to_string(heads) + ", "
                + std::to_string(tokens) + ", " + std::to_string(tokens) + ") for qkv " + shapeText(qkv.dims)
                + ", heads = " + std::to_string(heads) + ", window = " + std::to_string(window) + "; got "
                + shapeText(bias.dims));
    }
    dims.biasWindows = bias.dims[0];
    int64_t const outDims[4] = {qkv.dims[0], qkv.dims[1], qkv.dims[2], channels};
    OrtValue* out = nullptr;
    DAT_RETURN_IF_STATUS(k.api.kernelContextGetOutput(context, 0, outDims, 4, &out));
    void* data[3] = {};
    DAT_RETURN_IF_STATUS(dataPointers(k.api, {qkv.value, bias.value, out}, data));
    cpu::kernels().windowAttention(dims, data[0], toDType(qkv.elementType), data[1], toDType(bias.elementType), data[2]);
    return nullptr;
}

// ---- DATDeformAttention -------------------------------------------------------------------------------------------

OrtStatus* prepareDeformAttention(Kernel& k, OrtKernelInfo const*)
{
    std::string const op = k.op->name;
    int64_t const heads = k.integer("heads"), groups = k.integer("groups");
    if (heads < 1 || groups < 1)
    {
        return invalid(k.api,
            op + ": attributes heads and groups must be >= 1, got heads = " + std::to_string(heads)
                + ", groups = " + std::to_string(groups));
    }
    if (heads % groups != 0)
    {
        return invalid(k.api,
            op + ": attribute groups = " + std::to_string(groups) + " must divide heads = " + std::to_string(heads));
    }
    return checkConvention(k);
}

OrtStatus* computeDeformAttention(Kernel const& k, OrtKernelContext* context)
{
    int64_t const heads = k.integer("heads"), groups = k.integer("groups");
    TensorView q, key, value, table, pos;
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 0, q));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 1, key));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 2, value));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 3, table));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 4, pos));
    std::string const op = "DATDeformAttention";
    std::string const attrs = "heads = " + std::to_string(heads) + ", groups = " + std::to_string(groups);
    if (q.dims.size() != 4)
    {
        return invalid(k.api, op + ": q must be (B, H, W, C) (rank 4); got " + shapeText(q.dims));
    }
    int64_t const batch = q.dims[0];
    int64_t const channels = q.dims[3];
    if (channels % heads != 0)
    {
        return invalid(k.api,
            op + ": C = " + std::to_string(channels) + " (q " + shapeText(q.dims) + ") not divisible by heads = "
                + std::to_string(heads));
    }
    if (pos.dims.size() != 4 || pos.dims[0] != batch * groups || pos.dims[3] != 2)
    {
        return invalid(k.api,
            op + ": pos must be (B*groups, Hk, Wk, 2) = (" + std::to_string(batch * groups) + ", Hk, Wk, 2) for q "
                + shapeText(q.dims) + ", groups = " + std::to_string(groups) + "; got " + shapeText(pos.dims));
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
    if (table.dims.size() != 3 || table.dims[0] != heads)
    {
        return invalid(k.api,
            op + ": table must be (heads, Th, Tw) = (" + std::to_string(heads) + ", Th, Tw) for " + attrs + "; got "
                + shapeText(table.dims));
    }
    int64_t const outDims[4] = {q.dims[0], q.dims[1], q.dims[2], channels};
    OrtValue* out = nullptr;
    DAT_RETURN_IF_STATUS(k.api.kernelContextGetOutput(context, 0, outDims, 4, &out));
    void* data[6] = {};
    DAT_RETURN_IF_STATUS(dataPointers(k.api, {q.value, key.value, value.value, table.value, pos.value, out}, data));
    DeformAttentionDims const dims{.batch = batch, .height = q.dims[1], .width = q.dims[2], .channels = channels,
        .keyH = pos.dims[1], .keyW = pos.dims[2], .heads = heads, .groups = groups, .tableH = table.dims[1],
        .tableW = table.dims[2], .convention = static_cast<int32_t>(k.integer("convention")), .scale = k.real("scale")};
    cpu::kernels().deformAttention(dims, data[0], data[1], data[2], toDType(q.elementType), data[3],
        toDType(table.elementType), data[4], toDType(pos.elementType), data[5]);
    return nullptr;
}

} // namespace

std::vector<OpDescriptor> const& exportedOps()
{
    // T1: the data (and output) type; T2: the second input's type (coordinates, or WindowAttention's bias);
    // T3: DeformAttention's table. fp16 graphs keep coordinates in fp32, hence every combination.
    static std::vector<OpDescriptor> const ops = {
        OpDescriptor{
            .name = "DATDeformSample",
            .inputs = {{"x", TypeVar::kT1}, {"pos", TypeVar::kT2}},
            .outputs = {"y"},
            .types = {kFloatTypes, kFloatTypes, {}},
            .attributes = {requiredInt("groups")},
            .prepare = checkGroups,
            .compute = computeDeformSample,
        },
        OpDescriptor{
            .name = "DATRelPosBias",
            .inputs = {{"table", TypeVar::kT1}, {"pos", TypeVar::kT2}, {"x", TypeVar::kT1}},
            .outputs = {"bias"},
            .types = {kFloatTypes, kFloatTypes, {}},
            .attributes = {requiredInt("groups"), requiredInt("convention", " (0 = DAT, 1 = DAT++)")},
            .prepare = prepareRelPosBias,
            .compute = computeRelPosBias,
        },
        OpDescriptor{
            .name = "DATWindowAttention",
            .inputs = {{"qkv", TypeVar::kT1}, {"bias", TypeVar::kT2}},
            .outputs = {"y"},
            .types = {kFloatTypes, kFloatTypes, {}},
            .attributes = {requiredInt("heads"), requiredInt("window"), requiredInt("shift"), requiredFloat("scale")},
            .prepare = prepareWindowAttention,
            .compute = computeWindowAttention,
        },
        OpDescriptor{
            .name = "DATDeformAttention",
            .inputs = {{"q", TypeVar::kT1}, {"k", TypeVar::kT1}, {"v", TypeVar::kT1}, {"table", TypeVar::kT3},
                {"pos", TypeVar::kT2}},
            .outputs = {"y"},
            .types = {kFloatTypes, kFloatTypes, kFloatTypes},
            .attributes = {requiredInt("heads"), requiredInt("groups"), requiredInt("convention"),
                requiredFloat("scale")},
            .prepare = prepareDeformAttention,
            .compute = computeDeformAttention,
        },
    };
    return ops;
}

} // namespace ort
} // namespace dat
