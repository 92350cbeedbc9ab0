"""nanossm: the SSM scan out[t] = sum_{j<=t} exp(A[t] - A[j]) x[j] in O(T), on CUDA and CPU.

    from nanossm import ssm_scan      # drop-in for ssm_scan_triton(cumsum_A, x)
    out = ssm_scan(cumsum_A, x)

Importing is cheap and safe anywhere: the native library (and its Go runtime) loads on the
first call, choosing the CUDA flavour only where CUDA can start (see nanossm._loader).
"""
from .op import ssm_scan, ssm_step
from ._loader import NanossmError

__version__ = "0.2.0"
__all__ = ["ssm_scan", "ssm_step", "NanossmError", "library_info"]


def library_info():
    """Loads the library and returns {'version', 'flavour', 'reason', 'has_cuda'}."""
    from . import _loader
    L = _loader.lib()
    flavour, why = _loader.flavour()
    v = L.nanossm_version()
    return {"version": f"{v // 10000}.{v // 100 % 100}.{v % 100}", "flavour": flavour,
            "reason": why, "has_cuda": bool(L.nanossm_has_cuda())}
