"""Which MLAS int8 GEMM path this CPU gets, read from the CPUID flags Linux reports in /proc/cpuinfo.

MLAS picks its U8S8 kernel at run time (onnxruntime/core/mlas/lib/platform.cpp): AMX, then AVX-512 VNNI,
AVX-VNNI, AVX-512 core, AVX2, SSE4.1. Without VNNI the AVX2 / AVX-512 core kernels multiply with
VPMADDUBSW, whose int16 sum of two u8 x s8 products can saturate (`MlasPlatformU8S8Overflow()` is true
there); onnxruntime's remedies are 7-bit weights (`reduce_range`) or the session option
`session.x64quantprecision` = "1" (its slower U8U8 kernel).

What we do, by measurement on DAT-T: 7-bit weights cost accuracy everywhere (mean logit cosine against
PyTorch fp32 0.99829 instead of 0.99954, top-1 agreement 69% instead of 81% on 16 held-out photos), while
the saturation they prevent only exists on CPUs without VNNI (emulated on DAT-T's real activations: a few
pair sums in 10,000 saturate, the worst layer's output SQNR drops to about 24 dB). So the file keeps full
8-bit weights and the onnxruntime backend sets the precision option where `u8s8_overflow` is true;
`dat-deploy quantize --reduce-range` remains for fleets of such CPUs that want the U8S8 speed.
"""

from __future__ import annotations

import platform

from dat_deploy.profiling.machine import cpu_flags, cpu_model

PRECISION_OPTION = "session.x64quantprecision"  # onnxruntime_session_options_config_keys.h


def _cpuinfo() -> tuple[str, set[str]]:
    return cpu_model(), cpu_flags()


def int8_path() -> dict:
    """{"cpu", "path", "u8s8_overflow", "readable"}: the kernel MLAS picks for U8S8 GEMMs on this CPU."""
    model, flags = _cpuinfo()
    if platform.machine() not in ("x86_64", "AMD64"):
        return {"cpu": model, "path": f"{platform.machine()} (not x86: no U8S8 saturation)", "u8s8_overflow": False,
                "readable": False}
    avx512_core = {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags
    if "amx_int8" in flags and "amx_tile" in flags:
        path = "AMX"
    elif avx512_core and "avx512_vnni" in flags:
        path = "AVX-512 VNNI"
    elif "avx_vnni" in flags:
        path = "AVX-VNNI"
    elif avx512_core:
        path = "AVX-512 core (VPMADDUBSW)"
    elif "avx2" in flags:
        path = "AVX2 (VPMADDUBSW)"
    elif "sse4_1" in flags:
        path = "SSE4.1"
    else:
        path = "portable"
    overflow = path in ("AVX-512 core (VPMADDUBSW)", "AVX2 (VPMADDUBSW)")
    return {"cpu": model, "path": path, "u8s8_overflow": overflow, "readable": bool(flags)}


def set_int8_precision(model, options) -> bool:
    """For an int8 graph on a CPU whose U8S8 kernel can saturate: ask onnxruntime for its exact U8U8 kernel.
    Whether it did. Sessions of ours get it through runtime.onnxruntime_backend.prepare_session."""
    if not any(node.op_type == "QuantizeLinear" for node in model.graph.node):
        return False
    if not int8_path()["u8s8_overflow"]:
        return False
    options.add_session_config_entry(PRECISION_OPTION, "1")
    return True
