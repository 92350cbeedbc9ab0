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
