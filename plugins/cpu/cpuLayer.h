// The first include of every CPU kernel source. CMake compiles those sources once per instruction-set layer
// (DAT_CPU_LAYER_LEVEL 0, 1, 2) into one library, and cpuDispatch.cpp picks a layer from CPUID when the library
// loads, as onnxruntime's MLAS does (onnxruntime/core/mlas/lib/platform.cpp):
//   portable  x86-64 baseline (SSE2); also every non-x86 build
//   avx2      x86-64-v3: AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE (Haswell, Zen 1 and later)
//   avx512    x86-64-v4: x86-64-v3 + AVX-512 F, BW, CD, DQ, VL (Skylake-SP, Zen 4 and later)
// How the layers stay apart in one library:
// - Everything shared is included here, *before* the target pragma: the standard library's templates and the
//   common/ headers keep the baseline target, so the copies that the linker merges across layers are the same
//   baseline code (a template compiled with -mavx512f in one layer and merged into the portable one would be an
//   illegal instruction on an older CPU). common/'s helpers are always_inline, so they still compile into each
//   layer's code with that layer's instructions.
// - Everything after the pragma (our kernels, attentionVectorMath.h, geluMath.h) lives in namespace
//   dat::cpu::DAT_CPU_LAYER, so no symbol of one layer can stand in for another's.
// - In C++ the target pragma does not define __AVX2__, __AVX512F__ and friends (the front end reads the whole file
//   before the pragma takes effect), so the code picks its vector paths with DAT_CPU_LAYER_LEVEL instead.
// tests/test_cpu_layers.py disassembles the library and fails if an AVX instruction sits outside a layer namespace.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "../common/datDeformAttentionMath.h"
#include "../common/datSamplingMath.h"
#include "../common/datSamplingTypes.h"
#include "../common/datWindowAttentionMath.h"
#include "cpuKernels.h"
#include "threadPool.h"

#ifndef DAT_CPU_LAYER_LEVEL
#define DAT_CPU_LAYER_LEVEL 0
#endif

#if DAT_CPU_LAYER_LEVEL > 0
#if !defined(__x86_64__) || !defined(__GNUC__) || defined(__clang__)
#error "the avx2 / avx512 CPU layers need GCC on x86-64 (plugins/CMakeLists.txt builds only the portable one elsewhere)"
#endif
// GCC 12's AVX-512 intrinsics seed their masked builtins with a self-initialised `__Y`, which
// -Wmaybe-uninitialized (or -Wuninitialized, depending on the caller) reports at the header's lines once inlined
// (GCC PR 105593, fixed in 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#if DAT_CPU_LAYER_LEVEL == 2
#pragma GCC target("sse3,ssse3,sse4.1,sse4.2,popcnt,cx16,sahf,avx,avx2,bmi,bmi2,f16c,fma,lzcnt,movbe,xsave,avx512f,avx512bw,avx512cd,avx512dq,avx512vl")
#define DAT_CPU_LAYER avx512
#elif DAT_CPU_LAYER_LEVEL == 1
#pragma GCC target("sse3,ssse3,sse4.1,sse4.2,popcnt,cx16,sahf,avx,avx2,bmi,bmi2,f16c,fma,lzcnt,movbe,xsave")
#define DAT_CPU_LAYER avx2
#else
#define DAT_CPU_LAYER portable
#endif
