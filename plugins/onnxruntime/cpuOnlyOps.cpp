// The onnxruntime-only CPU ops: never exported, inserted into a session's graph by dat_deploy's CPU fusions
// (plugins/README.md). fp32 only.
#include "ortOpDescriptor.h"

#include "../cpu/cpuKernels.h"

#include <string>

namespace dat
{
namespace ort
{
namespace
{

std::vector<int32_t> const kFloat32 = {kOrtElementFloat};

// ---- DATBiasGelu: y = GELU(x + bias) ------------------------------------------------------------------------------

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
    cpu::kernels().biasGelu(static_cast<float const*>(data[0]), static_cast<float const*>(data[1]),
        static_cast<float*>(data[2]), rows, cols);
    return nullptr;
}

// ---- DATAddLayerNorm: sum = a + b, y = LayerNorm(sum) -------------------------------------------------------------

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
    cpu::kernels().addLayerNorm(static_cast<float const*>(data[0]), static_cast<float const*>(data[1]),
        static_cast<float const*>(data[2]), static_cast<float const*>(data[3]), k.real("epsilon"),
        static_cast<float*>(data[4]), static_cast<float*>(data[5]), rows, cols);
    return nullptr;
}

// ---- DATGemm: y = x W^T + bias (then the exact GELU when gelu = 1), W a constant initializer ---------------------

// Packs the weight once, when the session is made: it must be a constant initializer (what onnxruntime's own Gemm
// prepacks).
OrtStatus* prepareGemm(Kernel& k, OrtKernelInfo const* info)
{
    int64_t const gelu = k.integer("gelu");
    if (gelu != 0 && gelu != 1)
    {
        return invalid(k.api, "DATGemm: attribute gelu must be 0 or 1, got " + std::to_string(gelu));
    }
    int isConstant = 0;
    TensorView weight;
    DAT_RETURN_IF_STATUS(k.api.kernelInfoGetConstantInputTensor(info, 1, &isConstant, &weight.value));
    if (!isConstant || weight.value == nullptr)
    {
        return invalid(k.api, "DATGemm: the weight (input 1) must be a constant initializer of the graph");
    }
    DAT_RETURN_IF_STATUS(describe(k.api, weight));
    if (weight.dims.size() != 2 || weight.elementType != kOrtElementFloat)
    {
        return invalid(k.api, "DATGemm: the weight must be fp32 (N, K); got shape " + shapeText(weight.dims));
    }
    void* data = nullptr;
    DAT_RETURN_IF_STATUS(dataPointers(k.api, {weight.value}, &data));
    k.prepared = std::make_shared<cpu::PackedGemmWeights const>(
        cpu::kernels().packGemmWeights(static_cast<float const*>(data), weight.dims[0], weight.dims[1]));
    return nullptr;
}

OrtStatus* computeGemm(Kernel const& k, OrtKernelContext* context)
{
    TensorView x, bias;
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 0, x));
    DAT_RETURN_IF_STATUS(readInput(k.api, context, 2, bias));
    auto const& weights = *static_cast<cpu::PackedGemmWeights const*>(k.prepared.get());
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
    cpu::kernels().gemm(static_cast<float const*>(data[0]), leadingRows(x.dims), weights,
        static_cast<float const*>(data[1]), k.integer("gelu") == 1, static_cast<float*>(data[2]));
    return nullptr;
}

} // namespace

std::vector<OpDescriptor> const& cpuOnlyOps()
{
    static std::vector<OpDescriptor> const ops = {
        OpDescriptor{
            .name = "DATBiasGelu",
            .inputs = {{"x", TypeVar::kT1}, {"bias", TypeVar::kT1}},
            .outputs = {"y"},
            .types = {kFloat32, {}, {}},
            .attributes = {},
            .prepare = nullptr,
            .compute = computeBiasGelu,
        },
        OpDescriptor{
            .name = "DATAddLayerNorm",
            .inputs = {{"a", TypeVar::kT1}, {"b", TypeVar::kT1}, {"gamma", TypeVar::kT1}, {"beta", TypeVar::kT1}},
            .outputs = {"sum", "y"},
            .types = {kFloat32, {}, {}},
            .attributes = {requiredFloat("epsilon")},
            .prepare = nullptr,
            .compute = computeAddLayerNorm,
        },
        OpDescriptor{
            .name = "DATGemm",
            .inputs = {{"x", TypeVar::kT1}, {"weight", TypeVar::kT1}, {"bias", TypeVar::kT1}},
            .outputs = {"y"},
            .types = {kFloat32, {}, {}},
            .attributes = {optionalInt("gelu", 0)},
            .prepare = prepareGemm,
            .compute = computeGemm,
        },
    };
    return ops;
}

} // namespace ort
} // namespace dat
