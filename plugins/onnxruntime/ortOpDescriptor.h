// One onnxruntime custom op of domain "dat", described once: its name, inputs, outputs, element types,
// attributes and compute function. ortOpRegistry.cpp turns every description into the OrtCustomOp callbacks;
// exportedOps.cpp and cpuOnlyOps.cpp hold the descriptions. Adding an op = adding one OpDescriptor to one of
// those lists (and its kernel under plugins/cpu/).
#pragma once

#include "ortAbi.h"

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace dat
{
namespace ort
{

#define DAT_RETURN_IF_STATUS(expr)                                                                                     \
    do                                                                                                                 \
    {                                                                                                                  \
        OrtStatus* datStatus_ = (expr);                                                                                \
        if (datStatus_ != nullptr)                                                                                     \
        {                                                                                                              \
            return datStatus_;                                                                                         \
        }                                                                                                              \
    } while (0)

// An input's element type follows one of up to three type variables, as in an ONNX schema's type constraints.
// The op is registered once per combination of the variables it uses; every output has T1's type.
enum class TypeVar : int32_t
{
    kT1 = 0,
    kT2 = 1,
    kT3 = 2,
};
constexpr int kTypeVars = 3;

struct Input
{
    char const* name;
    TypeVar type;
};

enum class AttributeKind : int32_t
{
    kInt,
    kFloat,
};

struct AttributeSpec
{
    char const* name;
    AttributeKind kind;
    bool required;
    char const* hint;   // appended to the "missing attribute" message, e.g. " (0 = DAT, 1 = DAT++)"
    double fallback;    // the value of an optional attribute that the node does not set
};

inline AttributeSpec requiredInt(char const* name, char const* hint = "")
{
    return AttributeSpec{.name = name, .kind = AttributeKind::kInt, .required = true, .hint = hint, .fallback = 0.0};
}

inline AttributeSpec requiredFloat(char const* name)
{
    return AttributeSpec{.name = name, .kind = AttributeKind::kFloat, .required = true, .hint = "", .fallback = 0.0};
}

inline AttributeSpec optionalInt(char const* name, int64_t fallback)
{
    return AttributeSpec{.name = name, .kind = AttributeKind::kInt, .required = false, .hint = "",
        .fallback = static_cast<double>(fallback)};
}

struct OpDescriptor;

// One kernel instance (one node of a session): the op, its attributes as read when the session was made, and
// what `prepare` made from them (DATGemm's packed weight).
struct Kernel
{
    Api api;
    OpDescriptor const* op;
    std::vector<int64_t> ints;  // per attribute of op->attributes, in order (kFloat ones unused)
    std::vector<float> floats;  // likewise for kFloat
    std::shared_ptr<void const> prepared;

    // The attribute `name` of op->attributes; an unknown name throws std::logic_error (a bug in a descriptor).
    int64_t integer(char const* name) const;
    float real(char const* name) const;
};

// Checks attribute values beyond "present" (ranges, relations) and prepares constant state; nullptr = nothing to do.
using PrepareFn = OrtStatus* (*) (Kernel& kernel, OrtKernelInfo const* info);
using ComputeFn = OrtStatus* (*) (Kernel const& kernel, OrtKernelContext* context);

struct OpDescriptor
{
    char const* name;
    std::vector<Input> inputs;
    std::vector<char const*> outputs;
    std::vector<int32_t> types[kTypeVars]; // allowed element types of T1, T2, T3 (an unused variable: empty)
    std::vector<AttributeSpec> attributes;
    PrepareFn prepare;
    ComputeFn compute;
};

// The ops of the exported contract (plugins/README.md) and the onnxruntime-only CPU ops.
std::vector<OpDescriptor> const& exportedOps();
std::vector<OpDescriptor> const& cpuOnlyOps();

// ---- helpers for compute and prepare functions --------------------------------------------------------------------

struct TensorView
{
    OrtValue const* value{nullptr};
    std::vector<int64_t> dims;
    int32_t elementType{kOrtElementUndefined};
};

// Fills view's dims and element type from view.value.
OrtStatus* describe(Api const& api, TensorView& view);
OrtStatus* readInput(Api const& api, OrtKernelContext* context, size_t index, TensorView& view);
// data[i] = the data of values[i] (inputs and outputs alike: onnxruntime hands out only mutable pointers).
OrtStatus* dataPointers(Api const& api, std::initializer_list<OrtValue const*> values, void** data);
std::string shapeText(std::vector<int64_t> const& dims);
OrtStatus* invalid(Api const& api, std::string const& message);
// Rows of a tensor seen as (rows, last axis).
int64_t leadingRows(std::vector<int64_t> const& dims);

} // namespace ort
} // namespace dat
