"""Forward parity: nanossm vs the float64 sequential reference and the original einsum baseline."""
import pytest
import torch

from conftest import DEVICES, TOL, make_inputs, poisoned
from nanossm import ssm_scan
from nanossm.reference import rel_err, ssm_scan_einsum, ssm_scan_sequential

# T = 1, T = 3, T not a power of two, long T across many chunks; C = 1, C = 7, C multiple of 4/8.
# 16-bit lanes on the GPU (core/plan.go): 8 channels where they fill a warp ((2,1000,4,64) over
# 8 chunks, (2,8,64,64)), else 4 ((2,100,4,16), (1,517,3,64)), and 4 where C = 12 allows no 8.
SHAPES = [(1, 1, 1, 1), (2, 3, 4, 7), (2, 1000, 3, 5), (3, 129, 2, 1), (2, 100, 4, 16),
          (1, 517, 3, 64), (2, 8, 64, 64), (2, 1000, 4, 64), (2, 300, 16, 12)]
LONG = (1, 65537, 2, 4)


def dtypes_for(device):
    return [torch.float32, torch.float64] if device == "cpu" else [torch.float32, torch.float16, torch.bfloat16]


def check_forward(shape, device, dtype, seed=0):
    A, x = make_inputs(shape, dtype, device, seed=seed)
    out = poisoned(x)
    ssm_scan(A, x, out=out)
    ref, _ = ssm_scan_sequential(A.cpu(), x.cpu())
    err = rel_err(out.cpu(), ref)
    assert err <= TOL[dtype], f"{shape} {dtype} on {device}: rel err {err:.3e} > {TOL[dtype]}"
    return A, x, out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_float64(device, shape):
    for dtype in dtypes_for(device):
        check_forward(shape, device, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_forward_long_sequence(device):
    check_forward(LONG, device, torch.float32, seed=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 7), (2, 200, 3, 5), (1, 64, 8, 16)], ids=str)
def test_matches_einsum_baseline(device, shape):
    A, x = make_inputs(shape, torch.float32, device, seed=2)
    base = ssm_scan_einsum(A.double(), x.double())
    assert rel_err(ssm_scan(A, x), base) <= 1e-5
    # the drop-in signature of ssm_scan_triton keeps working
    assert rel_err(ssm_scan(A, x, use_assoc_scan=False), base) <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_fresh_inputs_every_call(device):
    """Different inputs give different outputs (guards against cached or hard-coded results)."""
    A1, x1 = make_inputs((2, 77, 3, 8), torch.float32, device, seed=10)
    A2, x2 = make_inputs((2, 77, 3, 8), torch.float32, device, seed=11)
    o1, o2 = ssm_scan(A1, x1), ssm_scan(A2, x2)
    assert not torch.allclose(o1, o2)
    assert rel_err(o2.cpu(), ssm_scan_sequential(A2.cpu(), x2.cpu())[0]) <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(2, 1, 3, 4), (2, 300, 3, 5), (1, 2000, 2, 8)], ids=str)
def test_initial_and_final_state(device, shape):
    A, x = make_inputs(shape, torch.float32, device, seed=3)
    h0 = torch.randn(shape[0], shape[2], shape[3], dtype=torch.float64).float().to(device)
    out, hT = ssm_scan(A, x, initial_state=h0, return_final_state=True)
    ref, ref_T = ssm_scan_sequential(A.cpu(), x.cpu(), initial_state=h0.cpu())
    assert hT.dtype == torch.float32 and hT.shape == h0.shape
    assert rel_err(out.cpu(), ref) <= 1e-5
    assert rel_err(hT.cpu(), ref_T) <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_chaining_split_points(device):
    """scan(A, x)[:, T1:] == scan(A[:, T1:] - A[:, T1-1], x[:, T1:], initial_state=final(first))."""
    A, x = make_inputs((2, 203, 3, 8), torch.float32, device, seed=4)
    whole = ssm_scan(A, x)
    for T1 in (1, 2, 63, 64, 65, 100, 202):
        first, h = ssm_scan(A[:, :T1], x[:, :T1], return_final_state=True)
        second = ssm_scan(A[:, T1:] - A[:, T1 - 1:T1], x[:, T1:], initial_state=h)
        assert rel_err(first, whole[:, :T1]) <= 1e-6
        assert rel_err(second, whole[:, T1:]) <= 1e-5, f"split at {T1}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 129, 3, 7), (2, 1000, 2, 16)], ids=str)
def test_reverse(device, shape):
    for dtype in dtypes_for(device):
        A, x = make_inputs(shape, dtype, device, seed=5)
        out = poisoned(x)
        ssm_scan(A, x, reverse=True, out=out)
        ref, _ = ssm_scan_sequential(A.cpu(), x.cpu(), reverse=True)
        assert rel_err(out.cpu(), ref) <= TOL[dtype], f"{shape} {dtype}"


@pytest.mark.parametrize("device", DEVICES)
def test_strided_views(device):
    """Transposed, sliced and expanded views are read in place and give the right answer."""
    B, T, R, C = 2, 150, 3, 8
    g = torch.Generator().manual_seed(6)
    big = torch.randn(B, R, T, 2 * C, generator=g).to(device)
    x = big.transpose(1, 2)[..., ::2]  # (B,T,R,C), non-unit stride in every dim
    A_full = torch.cumsum(-0.2 * torch.rand(B, R, T + 5, generator=g), dim=2).to(device)
    A = A_full.transpose(1, 2)[:, 5:]  # (B,T,R) view
    expected, _ = ssm_scan_sequential(A.cpu(), x.cpu())
    assert rel_err(ssm_scan(A, x).cpu(), expected) <= 1e-5
    x_sl = torch.randn(B, T, R, 3 * C, generator=g).to(device)[..., C:2 * C]  # unit inner stride
    assert rel_err(ssm_scan(A, x_sl).cpu(), ssm_scan_sequential(A.cpu(), x_sl.cpu())[0]) <= 1e-5
    x_bc = torch.randn(B, T, R, 1, generator=g).to(device).expand(B, T, R, C)  # stride 0 over C
    assert rel_err(ssm_scan(A, x_bc).cpu(), ssm_scan_sequential(A.cpu(), x_bc.cpu())[0]) <= 1e-5


def test_cpu_half_precision_upcasts():
    for dtype in (torch.float16, torch.bfloat16):
        A, x = make_inputs((2, 50, 3, 8), dtype, "cpu", seed=7)
        out = ssm_scan(A, x)
        assert out.dtype == dtype
        assert rel_err(out, ssm_scan_sequential(A, x)[0]) <= 1e-2
