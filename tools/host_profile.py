"""Where the host time of a small call goes (run on the GPU machine): each piece of
nanossm.ssm_scan timed alone, microseconds per call, best of 3 runs of N back-to-back calls."""
import sys
import time

import torch

sys.path.insert(0, "python")
from nanossm import _loader, op, ssm_scan  # noqa: E402


def per_call(f, n=5000):
    for _ in range(200):
        f()
    torch.cuda.synchronize()
    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


A = torch.cumsum(-0.2 * torch.rand(2, 8, 64, device="cuda"), 1)
x = torch.randn(2, 8, 64, 64, device="cuda")
out = torch.empty_like(x)
ssm_scan(A, x)
L = _loader.lib()
buf, addr = op._buffer()
op._launch(A, x, out, None, None, False)  # leaves a packed call in the buffer
stream = op._raw_stream(0)
rows = {
    "ssm_scan(A, x)": lambda: ssm_scan(A, x),
    "op._launch (pack + call)": lambda: op._launch(A, x, out, None, None, False),
    "op._launch_plain (the fast path's pack + call)": lambda: op._launch_plain(A, x, out),
    "library call alone (Go: validate, plan, launch)": lambda: L.nanossm_scan(addr, addr + 80, addr + 160, addr + 240, 0, stream),
    "ctypes call of nanossm_version": lambda: L.nanossm_version(),
    "pack three descriptors": lambda: (op._pack(buf, 0, A), op._pack(buf, 80, x), op._pack(buf, 160, out)),
    "torch.empty for out": lambda: torch.empty(x.shape, dtype=x.dtype, device=x.device),
    "raw stream handle": lambda: op._raw_stream(0),
    "x.clone() (a torch op, for scale)": lambda: x.clone(),
}
for name, f in rows.items():
    print(f"{per_call(f):8.2f} us  {name}")
