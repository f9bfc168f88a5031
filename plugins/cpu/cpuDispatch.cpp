// Picks the CPU kernels' instruction-set layer once, from CPUID, as onnxruntime's MLAS does (its
// platform.cpp): the widest layer that both this build and this CPU have, unless DAT_DEPLOY_CPU_LAYER names one.
// Compiled for the x86-64 baseline, like everything outside the layers.
#include "cpuKernels.h"

#include <cstdlib>
#include <string>

namespace dat
{
namespace cpu
{
namespace
{

struct Layer
{
    char const* name;
    KernelTable const& (*table)();
    char const* needs;       // for messages
    bool (*cpuHas)();
};

#if defined(__x86_64__) && defined(DAT_CPU_X86_LAYERS)
// libgcc's CPUID reading also checks, through XGETBV, that the OS saves the AVX / AVX-512 registers.
bool hasV3()
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v3");
}
bool hasV4()
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v4");
}
#endif
bool always()
{
    return true;
}

// Narrowest first.
Layer const kLayers[] = {
    {"portable", portable::table, "nothing beyond the x86-64 baseline", always},
#if defined(__x86_64__) && defined(DAT_CPU_X86_LAYERS)
    {"avx2", avx2::table, "x86-64-v3 (AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE)", hasV3},
    {"avx512", avx512::table, "x86-64-v4 (x86-64-v3 plus AVX-512 F, BW, CD, DQ, VL)", hasV4},
#endif
};

LayerChoice choose()
{
    LayerChoice choice{.table = &portable::table(), .layer = "", .reason = "", .supported = "", .error = ""};
    Layer const* widest = nullptr;
    for (Layer const& layer : kLayers)
    {
        if (layer.cpuHas())
        {
            choice.supported.append(choice.supported.empty() ? "" : ",").append(layer.name);
            widest = &layer;
        }
    }
    char const* forced = std::getenv("DAT_DEPLOY_CPU_LAYER");
    if (forced != nullptr && *forced != '\0')
    {
        for (Layer const& layer : kLayers)
        {
            if (std::string(forced) != layer.name)
            {
                continue;
            }
            if (!layer.cpuHas())
            {
                choice.error = std::string("DAT_DEPLOY_CPU_LAYER=") + forced + " needs " + layer.needs
                    + ", which this CPU does not have; it can run: " + choice.supported
                    + ". Unset DAT_DEPLOY_CPU_LAYER or pick one of those.";
                return choice;
            }
            choice.table = &layer.table();
            choice.layer = layer.name;
            choice.reason = std::string("forced by DAT_DEPLOY_CPU_LAYER=") + forced;
            return choice;
        }
        std::string names;
        for (Layer const& layer : kLayers)
        {
            names.append(names.empty() ? "" : ", ").append(layer.name);
        }
        choice.error = std::string("DAT_DEPLOY_CPU_LAYER=") + forced + " is not a layer of this library; use one of: "
            + names + " (or unset it to pick from CPUID).";
        return choice;
    }
    choice.table = &widest->table();
    choice.layer = widest->name;
    choice.reason = widest == &kLayers[0]
        ? std::string("CPUID: the CPU lacks x86-64-v3 (AVX2 + FMA), or this build has only the portable layer")
        : std::string("CPUID: the CPU has ") + widest->needs;
    return choice;
}

} // namespace

LayerChoice const& layerChoice()
{
    static LayerChoice const choice = choose();
    return choice;
}

} // namespace cpu
} // namespace dat
