"""Which MLAS int8 GEMM path this CPU gets, read from the CPUID flags Linux reports in /proc/cpuinfo.

MLAS picks its U8S8 kernel at run time (onnxruntime/core/mlas/lib/platform.cpp): AMX, then AVX-512 VNNI,
AVX-VNNI, AVX-512 core, AVX2, SSE4.1. Without VNNI the AVX2 / AVX-512 core kernels multiply with
VPMADDUBSW, whose int16 sum of two u8 x s8 products can saturate (`MlasPlatformU8S8Overflow()` is true
there); onnxruntime's remedies are 7-bit weights (`reduce_range`) or the session option
`session.x64quantprecision` = "1" (its slower U8U8 kernel).
"""

from __future__ import annotations

import platform
from pathlib import Path

PRECISION_OPTION = "session.x64quantprecision"  # onnxruntime_session_options_config_keys.h


def _cpuinfo() -> tuple[str, set[str]]:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown", set()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")
    flags = next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())
    return model, flags


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
