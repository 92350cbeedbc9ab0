"""Session 33, call 4: where a pack of few tiles spends its time (they take 2x the plain scan of
the same tokens). For each B,T,R,C:dtype, B equal sequences of T packed into one (no states): the
call's do_bench median, the plain scan's, the copy of x, and torch.profiler's per-kernel GPU time
per call (three passes: pass 1, the prefix pass, pass 3, the workspace reset). Knobs
(NANOSSM_TUNE_PASSES, _SEGMENTS) from the environment, read at load. Not a test.
usage: PYTHONPATH=python python3 docs/experiments/session33-call4.py B,T,R,C:dtype ..."""
import sys

import torch
import triton.testing
from torch.profiler import ProfilerActivity, profile

from nanossm import ssm_scan
from nanossm.bench import warm_gpu

warm_gpu()
flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
DT = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
for arg in sys.argv[1:]:
    B, T, R, C = (int(v) for v in arg.split(":")[0].split(","))
    dt = DT[arg.split(":")[1]]
    A = (-torch.rand(B, T, R, device="cuda") * 0.1).cumsum(1)
    x = torch.randn(B, T, R, C, device="cuda").to(dt)
    Ap, xp = A.reshape(1, B * T, R), x.reshape(1, B * T, R, C)
    cu = torch.arange(0, B * T + 1, T, device="cuda", dtype=torch.int32)
    call = lambda: ssm_scan(Ap, xp, cu_seqlens=cu)  # noqa: E731
    bench = lambda f: triton.testing.do_bench(f, warmup=25, rep=100, return_mode="median") * 1e3  # noqa: E731
    med, plain, cp = bench(call), bench(lambda: ssm_scan(A, x)), bench(lambda: x.clone())
    n = 50
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            flush.zero_()
            call()
        torch.cuda.synchronize()
    parts = []
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if "nanossm" in ev.key or "memset" in ev.key.lower():
            parts.append(f"{ev.key.replace('nanossm_', '')} {t / n:.1f} x{ev.count // n}")
    print(f"{arg:>22} packed {med:.1f}us plain {plain:.1f}us copy {cp:.1f}us | " + "; ".join(parts))
