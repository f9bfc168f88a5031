"""The CUDA kernels against F.grid_sample / the reference bias / the window and deformable attention
references on the GPU, fp32 and fp16.

Runs only where a CUDA GPU and nvcc exist; the kernels are called through libdat_cuda_ops.so's C
entry points with torch's device pointers and stream.
"""

from __future__ import annotations

import ctypes
import shutil

import pytest
import torch

from dat_deploy import native
from dat_deploy.model import sampling
from dat_deploy.model.attention import shift_window_mask
from dat_deploy.model.deformable import deformable_attention_reference
from dat_deploy.model.windows import window_attention_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch"),
    pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH: cannot build the CUDA kernels"),
]

DTYPE_CODES = {torch.float32: 0, torch.float16: 1}


@pytest.fixture(scope="module")
def kernels():
    library = native.build(cuda=True).library("dat_cuda_ops")
    assert library is not None
    lib = ctypes.CDLL(str(library))
    i64, ptr, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int32
    lib.dat_cuda_deform_sample.argtypes = [i64] * 7 + [ptr, i32, ptr, i32, ptr, ptr]
    lib.dat_cuda_rel_pos_bias.argtypes = [i64] * 9 + [i32, ptr, i32, ptr, i32, ptr, ptr]
    lib.dat_cuda_window_attention.argtypes = [i64] * 8 + [ctypes.c_float, ptr, i32, ptr, i32, ptr, ptr]
    lib.dat_cuda_deform_attention.argtypes = [i64] * 10 + [i32, ctypes.c_float, ptr, ptr, ptr, i32, ptr, i32, ptr, i32, ptr, ptr]
    return lib


def deform_sample_cuda(lib, x, pos, groups):
    out = torch.empty(x.shape[0], x.shape[1], pos.shape[1], pos.shape[2], device=x.device, dtype=x.dtype)
    stream = torch.cuda.current_stream().cuda_stream
    err = lib.dat_cuda_deform_sample(*x.shape, groups, pos.shape[1], pos.shape[2], x.data_ptr(), DTYPE_CODES[x.dtype],
                                     pos.data_ptr(), DTYPE_CODES[pos.dtype], out.data_ptr(), stream)
    assert err == 0
    torch.cuda.synchronize()
    return out


def rel_pos_bias_cuda(lib, table, pos, x, groups, convention):
    heads = table.shape[0]
    out = torch.empty(x.shape[0] * heads, x.shape[2] * x.shape[3], pos.shape[1] * pos.shape[2], device=x.device, dtype=table.dtype)
    stream = torch.cuda.current_stream().cuda_stream
    err = lib.dat_cuda_rel_pos_bias(x.shape[0], heads, table.shape[1], table.shape[2], groups, pos.shape[1], pos.shape[2],
                                    x.shape[2], x.shape[3], {"dat": 0, "dat_pp": 1}[convention], table.data_ptr(),
                                    DTYPE_CODES[table.dtype], pos.data_ptr(), DTYPE_CODES[pos.dtype], out.data_ptr(), stream)
    assert err == 0
    torch.cuda.synchronize()
    return out


CASES = [  # batch, channels/group, H, W, groups, Hk, Wk
    (1, 32, 14, 14, 3, 14, 14), (2, 96, 7, 7, 6, 7, 7), (3, 5, 9, 6, 4, 4, 5), (5, 64, 56, 56, 1, 7, 7), (2, 3, 5, 5, 8, 3, 1),
]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 4e-3)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_deform_sample_gpu(kernels, case, dtype, tol):
    batch, cpg, h, w, groups, kh, kw = case
    g = torch.Generator(device="cuda").manual_seed(sum(case))
    x = torch.randn(batch, cpg * groups, h, w, device="cuda", generator=g).to(dtype)
    pos = torch.rand(batch * groups, kh, kw, 2, device="cuda", generator=g) * 2.8 - 1.4
    got = deform_sample_cuda(kernels, x, pos, groups)
    want = sampling.deform_sample_reference(x.float(), pos, groups)
    torch.testing.assert_close(got.float(), want, rtol=0, atol=tol)


@pytest.mark.parametrize("convention", ["dat", "dat_pp"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 4e-3)])
@pytest.mark.parametrize("case", [(1, 4, 27, 27, 3, 14, 14, 14, 14), (2, 2, 111, 111, 1, 7, 7, 56, 56), (3, 3, 9, 7, 8, 3, 5, 5, 6)],
                         ids=lambda c: "x".join(map(str, c)))
def test_rel_pos_bias_gpu(kernels, case, dtype, tol, convention):
    batch, hpg, th, tw, groups, kh, kw, qh, qw = case
    g = torch.Generator(device="cuda").manual_seed(sum(case))
    table = torch.randn(hpg * groups, th, tw, device="cuda", generator=g).to(dtype)
    pos = torch.rand(batch * groups, kh, kw, 2, device="cuda", generator=g) * 2.8 - 1.4
    x = torch.empty(batch, 1, qh, qw, device="cuda")
    got = rel_pos_bias_cuda(kernels, table, pos, x, groups, convention)
    want = sampling.rel_pos_bias_reference(table.float(), pos, x, groups, convention)
    torch.testing.assert_close(got.float(), want, rtol=0, atol=tol)


def test_fp16_positions_gpu(kernels):
    x = torch.randn(2, 8, 6, 6, device="cuda").half()
    pos = (torch.rand(4, 3, 3, 2, device="cuda") * 2 - 1).half()
    got = deform_sample_cuda(kernels, x, pos, 2)
    torch.testing.assert_close(got.float(), sampling.deform_sample_reference(x.float(), pos.float(), 2), rtol=0, atol=4e-3)


CUDA_ERROR_INVALID_VALUE = 1


def window_attention_call(lib, qkv, bias, heads, window, shift, scale, out):
    batch, height, width, three_c = qkv.shape
    stream = torch.cuda.current_stream().cuda_stream
    return lib.dat_cuda_window_attention(batch, height, width, three_c // 3, heads, window, shift, bias.shape[0], scale,
                                         qkv.data_ptr(), DTYPE_CODES[qkv.dtype], bias.data_ptr(), DTYPE_CODES[bias.dtype],
                                         out.data_ptr(), stream)


def window_attention_cuda(lib, qkv, bias, heads, window, shift, scale):
    assert qkv.is_contiguous() and bias.is_contiguous()
    out = torch.full((*qkv.shape[:3], qkv.shape[3] // 3), float("nan"), device=qkv.device, dtype=qkv.dtype)
    assert window_attention_call(lib, qkv, bias, heads, window, shift, scale, out) == 0
    torch.cuda.synchronize()
    return out


def window_inputs(case, dtype, bias_dtype, seed):
    """qkv (B, H, W, 3C) and bias (Nb, heads, T, T): a random relative-position bias, plus Swin's shift mask
    (one bias per window) for shifted square maps, else one bias per window when `per_window`, else one shared."""
    batch, height, width, channels, heads, window, shift, per_window = case
    g = torch.Generator(device="cuda").manual_seed(seed)
    tokens = window * window
    qkv = torch.randn(batch, height, width, 3 * channels, device="cuda", generator=g).to(dtype)
    bias = torch.randn(1, heads, tokens, tokens, device="cuda", generator=g) * 2
    windows = (height // window) * (width // window)
    if shift and height == width:
        bias = bias + shift_window_mask(height, window, shift).to("cuda")[:, None]
    elif per_window:
        bias = bias + torch.randn(windows, heads, tokens, tokens, device="cuda", generator=g)
    return qkv, bias.to(bias_dtype).contiguous()


WINDOW_CASES = [  # batch, H, W, C, heads, window, shift, one bias per window
    (2, 56, 56, 96, 3, 7, 0, False), (2, 56, 56, 96, 3, 7, 4, True),      # DAT-T stage 1, plain and shifted
    (3, 28, 28, 192, 6, 7, 4, True), (1, 14, 14, 384, 12, 7, 0, False),   # stages 2, 3
    (2, 14, 14, 384, 12, 7, 4, True), (4, 7, 7, 768, 24, 7, 4, True),     # stage 3 shifted, stage 4 (one window)
    (2, 6, 9, 15, 3, 3, 2, True),    # odd head dim (5): scalar loads / stores; non-square map
    (1, 4, 4, 2, 2, 1, 0, False),    # window 1 (one token), head dim 1
    (2, 10, 10, 160, 2, 5, 2, True), # head dim 80: more than 32 channel pairs per lane pass
    (2, 16, 16, 128, 2, 8, 3, True), # 64 tokens x head dim 64: over 48 KiB of shared memory (opt-in)
    (1, 12, 8, 36, 4, 4, 1, False),  # head dim 9, 16 tokens, shifted with one shared bias
]


@pytest.mark.parametrize("dtype,bias_dtype,tol", [(torch.float32, torch.float32, 1e-5), (torch.float16, torch.float16, 4e-3),
                                                  (torch.float16, torch.float32, 4e-3)], ids=["fp32", "fp16", "fp16-fp32bias"])
@pytest.mark.parametrize("case", WINDOW_CASES, ids=lambda c: "x".join(map(str, c)))
def test_window_attention_gpu(kernels, case, dtype, bias_dtype, tol):
    batch, height, width, channels, heads, window, shift, _ = case
    qkv, bias = window_inputs(case, dtype, bias_dtype, seed=sum(case[:7]))
    scale = (channels // heads) ** -0.5
    got = window_attention_cuda(kernels, qkv, bias, heads, window, shift, scale)
    # float64 reference: no TF32 and no reduction-order noise on the reference side
    want = window_attention_reference(qkv.double(), bias.double(), heads, window, shift, scale)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 4e-3)])
def test_window_attention_unaligned_pointers_gpu(kernels, dtype, tol):
    """qkv and out one element past an aligned address: the kernel falls back to scalar loads and stores."""
    case = (2, 14, 14, 96, 3, 7, 4, True)
    qkv, bias = window_inputs(case, dtype, dtype, seed=11)
    qkv_odd = torch.empty(qkv.numel() + 1, device="cuda", dtype=dtype)[1:].view(qkv.shape)
    qkv_odd.copy_(qkv)
    out_odd = torch.empty(2 * 14 * 14 * 96 + 1, device="cuda", dtype=dtype)[1:].view(2, 14, 14, 96)
    scale = 32 ** -0.5
    assert window_attention_call(kernels, qkv_odd, bias, 3, 7, 4, scale, out_odd) == 0
    torch.cuda.synchronize()
    want = window_attention_reference(qkv.double(), bias.double(), 3, 7, 4, scale)
    torch.testing.assert_close(out_odd.double(), want, rtol=0, atol=tol)


def test_window_attention_refuses_bad_shapes_gpu(kernels):
    """Contract violations and windows too large for shared memory return cudaErrorInvalidValue, launching nothing."""
    qkv = torch.randn(1, 14, 14, 3 * 64, device="cuda")
    bias = torch.zeros(4, 2, 49, 49, device="cuda")
    out = torch.full((1, 14, 14, 64), 7.0, device="cuda")

    def call(qkv, bias, heads, window, shift):
        return window_attention_call(kernels, qkv, bias, heads, window, shift, 0.125, out)

    assert call(qkv, bias, 2, 7, 7) == CUDA_ERROR_INVALID_VALUE            # shift == window
    assert call(qkv, bias, 3, 7, 0) == CUDA_ERROR_INVALID_VALUE            # heads do not divide C
    assert call(qkv, bias, 2, 5, 0) == CUDA_ERROR_INVALID_VALUE            # window does not divide H
    assert call(qkv, bias[:3], 2, 7, 0) == CUDA_ERROR_INVALID_VALUE        # 3 biases for 4 windows
    big_qkv = torch.randn(1, 12, 12, 3 * 264, device="cuda")  # 144 tokens x head dim 132: about 227 KiB
    big_bias = torch.zeros(1, 2, 144, 144, device="cuda")
    big_out = torch.empty(1, 12, 12, 264, device="cuda")
    optin = getattr(torch.cuda.get_device_properties(0), "shared_memory_per_block_optin", 0)
    if 0 < optin < 232704:  # every GPU so far (H100 / H200: 227 KiB)
        assert window_attention_call(kernels, big_qkv, big_bias, 2, 12, 0, 0.1, big_out) == CUDA_ERROR_INVALID_VALUE
    torch.cuda.synchronize()
    assert bool((out == 7.0).all())  # nothing was written


CONVENTION_CODES = {"dat": 0, "dat_pp": 1}


def deform_attention_call(lib, q, k, v, table, pos, heads, groups, convention, scale, out):
    batch, height, width, channels = q.shape
    stream = torch.cuda.current_stream().cuda_stream
    return lib.dat_cuda_deform_attention(batch, height, width, channels, pos.shape[1], pos.shape[2], heads, groups,
                                         table.shape[1], table.shape[2], CONVENTION_CODES.get(convention, convention), scale,
                                         q.data_ptr(), k.data_ptr(), v.data_ptr(), DTYPE_CODES[q.dtype], table.data_ptr(),
                                         DTYPE_CODES[table.dtype], pos.data_ptr(), DTYPE_CODES[pos.dtype], out.data_ptr(),
                                         stream)


def deform_attention_cuda(lib, q, k, v, table, pos, heads, groups, convention, scale):
    assert all(t.is_contiguous() for t in (q, k, v, table, pos))
    out = torch.full_like(q, float("nan"))
    assert deform_attention_call(lib, q, k, v, table, pos, heads, groups, convention, scale, out) == 0
    torch.cuda.synchronize()
    return out


def deform_inputs(case, dtype, table_dtype, pos_dtype, seed):
    """q (B, H, W, C), k and v (B, Hk*Wk, C), table (heads, Th, Tw), pos (B*groups, Hk, Wk, 2) in [-1.4, 1.4]
    (partly outside [-1, 1], so some bias taps fall off the table)."""
    batch, height, width, channels, heads, groups, kh, kw, th, tw, _ = case
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(batch, height, width, channels, device="cuda", generator=g).to(dtype)
    k = torch.randn(batch, kh * kw, channels, device="cuda", generator=g).to(dtype)
    v = torch.randn(batch, kh * kw, channels, device="cuda", generator=g).to(dtype)
    table = torch.randn(heads, th, tw, device="cuda", generator=g).to(table_dtype)
    pos = (torch.rand(batch * groups, kh, kw, 2, device="cuda", generator=g) * 2.8 - 1.4).to(pos_dtype)
    return q, k, v, table, pos


DEFORM_CASES = [  # batch, H, W, C, heads, groups, Hk, Wk, Th, Tw, convention
    (2, 14, 14, 384, 12, 3, 14, 14, 27, 27, "dat"),   # DAT-T stage 3: 196 keys, over 48 KiB of shared memory (opt-in)
    (2, 7, 7, 768, 24, 6, 7, 7, 13, 13, "dat"),       # DAT-T stage 4
    (1, 56, 56, 64, 2, 1, 7, 7, 111, 111, "dat_pp"),  # DAT++-T stage 1
    (2, 28, 28, 128, 4, 2, 7, 7, 55, 55, "dat_pp"),   # stage 2
    (1, 14, 14, 256, 8, 4, 7, 7, 27, 27, "dat_pp"),   # stage 3
    (2, 7, 7, 512, 16, 8, 7, 7, 13, 13, "dat_pp"),    # stage 4
    (2, 5, 9, 15, 3, 1, 3, 5, 9, 7, "dat"),           # odd head dim (5): scalar loads / stores; Hk != Wk, H != W
    (1, 3, 2, 4, 4, 2, 1, 1, 1, 1, "dat_pp"),         # one key, head dim 1, a 1x1 table
    (2, 6, 5, 160, 2, 2, 4, 3, 11, 9, "dat"),         # head dim 80: more than 32 channel pairs per lane pass
    (1, 8, 8, 64, 2, 1, 15, 20, 15, 15, "dat"),       # 300 keys: 90 KiB of shared memory (fits sm_86 / sm_89 too)
]


def deform_fp32_tolerance(case):
    """1e-5, widened for large tables: the contract computes coordinates in fp32 (the reference here in float64),
    and a coordinate's rounding error (~6e-8) grows with the table's pixel scale (Th - 1) / 2 into the bias.
    A CPU emulation of the kernel's fp32 math measured 1.5e-5 for the 111x111 table and 8e-6 for 55x55."""
    return 1e-5 * max(1.0, (max(case[8], case[9]) - 1) / 26)


@pytest.mark.parametrize("dtype,table_dtype,pos_dtype", [
    (torch.float32, torch.float32, torch.float32), (torch.float16, torch.float16, torch.float16),
    (torch.float16, torch.float32, torch.float32), (torch.float32, torch.float32, torch.float16),
], ids=["fp32", "fp16", "fp16-fp32table-fp32pos", "fp32-fp16pos"])
@pytest.mark.parametrize("case", DEFORM_CASES, ids=lambda c: "x".join(map(str, c)))
def test_deform_attention_gpu(kernels, case, dtype, table_dtype, pos_dtype):
    heads, groups, convention = case[4], case[5], case[10]
    q, k, v, table, pos = deform_inputs(case, dtype, table_dtype, pos_dtype, seed=sum(case[:10]))
    scale = (case[3] // heads) ** -0.5
    got = deform_attention_cuda(kernels, q, k, v, table, pos, heads, groups, convention, scale)
    # float64 reference of the (already rounded) inputs: no TF32 and no reduction-order noise on its side
    want = deformable_attention_reference(q.double(), k.double(), v.double(), table.double(), pos.double(), heads, groups,
                                          convention, scale)
    tol = deform_fp32_tolerance(case) if dtype == torch.float32 else 4e-3
    torch.testing.assert_close(got.double(), want, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 4e-3)])
def test_deform_attention_unaligned_pointers_gpu(kernels, dtype, tol):
    """q, k, v and out one element past an aligned address: the kernel falls back to scalar loads and stores."""
    case = (2, 14, 14, 96, 3, 3, 7, 7, 27, 27, "dat")
    inputs = deform_inputs(case, dtype, dtype, torch.float32, seed=5)

    def odd(t):
        shifted = torch.empty(t.numel() + 1, device="cuda", dtype=t.dtype)[1:].view(t.shape)
        shifted.copy_(t)
        return shifted

    q, k, v, table, pos = inputs
    out = odd(torch.zeros_like(q))
    scale = 32 ** -0.5
    assert deform_attention_call(kernels, odd(q), odd(k), odd(v), table, pos, 3, 3, "dat", scale, out) == 0
    torch.cuda.synchronize()
    want = deformable_attention_reference(q.double(), k.double(), v.double(), table.double(), pos.double(), 3, 3, "dat", scale)
    torch.testing.assert_close(out.double(), want, rtol=0, atol=tol)


def test_deform_attention_refuses_bad_shapes_gpu(kernels):
    """Contract violations and keys too many for shared memory return cudaErrorInvalidValue, launching nothing;
    no keys at all give zeros."""
    q, k, v, table, pos = deform_inputs((1, 7, 7, 64, 4, 2, 7, 7, 13, 13, "dat"), torch.float32, torch.float32,
                                        torch.float32, seed=3)
    out = torch.full_like(q, 7.0)

    def call(heads, groups, convention="dat", table=table, pos=pos, k=k, v=v, out=out):
        return deform_attention_call(kernels, q, k, v, table, pos, heads, groups, convention, 0.125, out)

    assert call(4, 2) == 0  # the inputs themselves are fine
    torch.cuda.synchronize()
    out.fill_(7.0)
    assert call(3, 1) == CUDA_ERROR_INVALID_VALUE                                    # heads do not divide C
    assert call(4, 3) == CUDA_ERROR_INVALID_VALUE                                    # groups do not divide heads
    assert call(0, 1) == CUDA_ERROR_INVALID_VALUE                                    # heads 0
    assert call(4, 0) == CUDA_ERROR_INVALID_VALUE                                    # groups 0
    assert deform_attention_call(kernels, q, k, v, table, pos, 4, 2, 2, 0.125, out) == CUDA_ERROR_INVALID_VALUE  # convention 2
    assert call(4, 2, table=table[:, :0]) == CUDA_ERROR_INVALID_VALUE                # empty table
    many = 40 * 40  # 1600 keys x head dim 32: 476 KiB of shared memory
    big_k = torch.randn(1, many, 64, device="cuda")
    big_pos = torch.rand(2, 40, 40, 2, device="cuda") * 2 - 1
    optin = getattr(torch.cuda.get_device_properties(0), "shared_memory_per_block_optin", 0)
    if 0 < optin < 487424:  # every GPU so far (H100 / H200: 227 KiB)
        assert call(2, 2, pos=big_pos, k=big_k, v=big_k) == CUDA_ERROR_INVALID_VALUE
    torch.cuda.synchronize()
    assert bool((out == 7.0).all())  # nothing was written
    no_keys = torch.empty(2, 0, 7, 2, device="cuda")
    assert call(4, 2, pos=no_keys, k=k[:, :0], v=v[:, :0]) == 0
    torch.cuda.synchronize()
    assert bool((out == 0).all())  # softmax over no keys times no values: zeros, like the reference
