import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))

import nanossm  # noqa: E402
from nanossm import _loader  # noqa: E402


def _cuda_status():
    if not torch.cuda.is_available():
        return False, "no CUDA device visible to torch"
    if nanossm.library_info()["flavour"] != "cuda":
        return False, "nanossm loaded its CPU-only flavour: " + nanossm.library_info()["reason"]
    return True, ""


CUDA_OK, CUDA_WHY = _cuda_status() if os.environ.get("NANOSSM_FLAVOUR") != "cpu" else (False, "NANOSSM_FLAVOUR=cpu")
requires_cuda = pytest.mark.skipif(not CUDA_OK, reason=f"CUDA case skipped: {CUDA_WHY}")

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]

# ||out - ref|| / ||ref|| against the float64 reference (SPEC: fp32 1e-5, 16-bit I/O 1e-2).
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def make_inputs(shape, dtype=torch.float32, device="cpu", seed=0, lo=-0.2, hi=0.0):
    """Fresh random inputs: log-decay uniform in (lo, hi), x standard normal. Never zeros."""
    B, T, R, C = shape
    g = torch.Generator().manual_seed(seed)
    log_a = lo + (hi - lo) * torch.rand(B, T, R, generator=g, dtype=torch.float64)
    A = torch.cumsum(log_a, dim=1).float()
    x = torch.randn(B, T, R, C, generator=g, dtype=torch.float64).to(dtype)
    return A.to(device), x.to(device)


def poisoned(x):
    return torch.full_like(x, float("nan"))

# Gradients vs float64 autograd: (dx, dA and dh0) per dtype. dA sums g*out - x*dx over C, whose
# terms cancel: it carries the I/O rounding of out and dx at a few times the forward's tolerance.
GRAD_TOL = {torch.float64: (1e-10, 1e-9), torch.float32: (1e-5, 1e-4),
            torch.float16: (1e-2, 3e-2), torch.bfloat16: (2e-2, 6e-2)}


def ref64(A, x, h0=None, reverse=False, cu=None):
    """The op in float64 with autograd, from SPEC's definitions: (out, final_state).

    Unpacked: the einsum baseline (reverse: on time-flipped inputs) plus exp(A[t]) * h0.
    Packed (cu, B = 1): each sequence alone, A rebased to A[s-1], its own initial state."""
    from nanossm.reference import ssm_scan_einsum
    A, x = A.double(), x.double()
    h0 = None if h0 is None else h0.double()
    if cu is None:
        if reverse:
            out = ssm_scan_einsum(-A.flip(1), x.flip(1)).flip(1)
            return out, out[:, 0]
        out = ssm_scan_einsum(A, x)
        if h0 is not None:
            out = out + torch.exp(A).unsqueeze(-1) * h0.unsqueeze(1)
        return out, out[:, -1]
    cu = [int(v) for v in cu]
    parts, fins = [], []
    for k in range(len(cu) - 1):
        s, e = cu[k], cu[k + 1]
        init = None if h0 is None else h0[k:k + 1]
        if s == e:
            fins.append(init[0] if init is not None else x.new_zeros(x.shape[2:]))
            continue
        a = A[:, s:e] - (A[:, s - 1:s] if s > 0 else 0.0)
        o, f = ref64(a, x[:, s:e], init, reverse)
        parts.append(o)
        fins.append(f[0])
    return torch.cat(parts, 1), torch.stack(fins)


def dA_err(got, ref, x, g, out_ref, dx_ref):
    """Error of dA = sum_c (g*out - x*dx): relative to the size of the terms it sums (they cancel,
    exactly at T = 1 where dA = 0), or to dA itself where that is larger."""
    d = lambda t: t.detach().double()  # noqa: E731
    scale = (d(g) * d(out_ref)).abs().sum(-1) + (d(x) * d(dx_ref)).abs().sum(-1)
    return (d(got) - d(ref)).norm().item() / max(d(ref).norm().item(), scale.norm().item(), 1e-300)


def assert_grads_match_ref64(leaves, x, g, gT, dtype, what, reverse=False, cu=None):
    """leaves = [A, x] or [A, x, h0], their .grad holding nanossm's gradients of
    sum(out * g) + sum(final * gT): each compared with float64 autograd through ref64 at
    GRAD_TOL[dtype] (dA with dA_err)."""
    from nanossm.reference import rel_err
    refs = [t.detach().double().requires_grad_() for t in leaves]
    rout, rfin = ref64(refs[0], refs[1], refs[2] if len(refs) > 2 else None, reverse, cu=cu)
    ((rout * g.double()).sum() + ((rfin * gT.double()).sum() if gT is not None else 0)).backward()
    tx, tA = GRAD_TOL[dtype]
    e = rel_err(leaves[1].grad, refs[1].grad)
    assert e <= tx, f"dx {what}: {e:.2e}"
    e = dA_err(leaves[0].grad, refs[0].grad, x, g, rout, refs[1].grad)
    assert e <= tA, f"dA {what}: {e:.2e}"
    if len(refs) > 2:
        e = rel_err(leaves[2].grad, refs[2].grad)
        assert e <= tx, f"dh0 {what}: {e:.2e}"
