"""The CUDA kernels against F.grid_sample / the reference bias on the GPU, fp32 and fp16.

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
