"""Session 34 (prepared in session 33, not run): v83's worst case. Packs of one or two tiles
whose one sequence holds a fraction of the tokens (the rest split evenly), forward and fused
backward, do_bench median: v83 cuts segments by sequence count, so the big sequence runs as one
chain. Run under the default plan and NANOSSM_TUNE_PASSES=3 (the plan before v83) and compare.
usage: PYTHONPATH=python python3 docs/experiments/session34-skew.py T,R,C:dtype:seqs:frac ...
(e.g. 65536,4,64:bf16:40:0.9). Since v85 also with max_seqlen given (the plan hint: three passes
for these packs), in the same run. Not a test."""
import sys

import torch
import triton.testing

from nanossm import ssm_scan
from nanossm._call import _launch_backward
from nanossm.bench import warm_gpu

warm_gpu()
DT = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
bench = lambda f: triton.testing.do_bench(f, warmup=25, rep=100, return_mode="median") * 1e3  # noqa: E731
for arg in sys.argv[1:]:
    shape, dname, seqs, frac = arg.split(":")
    T, R, C = (int(v) for v in shape.split(","))
    n, big = int(seqs), int(float(frac) * T)
    rest = (T - big) // (n - 1)
    lengths = [rest] * (n // 2) + [big] + [rest] * (n - 1 - n // 2)
    lengths[-1] += T - sum(lengths)
    cu = torch.tensor([0] + lengths, device="cuda").cumsum(0).to(torch.int32)
    A = (-torch.rand(1, T, R, device="cuda") * 0.1).cumsum(1)
    x = torch.randn(1, T, R, C, device="cuda").to(DT[dname])
    fwd = bench(lambda: ssm_scan(A, x, cu_seqlens=cu))
    plain = bench(lambda: ssm_scan(A, x))  # (one sequence: for scale)
    out, g = ssm_scan(A, x, cu_seqlens=cu), torch.randn_like(x)
    dx, dA = torch.empty_like(x), torch.empty_like(A)
    bwd = bench(lambda: _launch_backward(A, x, out, g, dx, dA, None, None, None, cu, False))
    hint = max(lengths)
    fwd_h = bench(lambda: ssm_scan(A, x, cu_seqlens=cu, max_seqlen=hint))
    bwd_h = bench(lambda: _launch_backward(A, x, out, g, dx, dA, None, None, None, cu, False, hint))
    cp = bench(lambda: x.clone())
    print(f"{arg:>28} packed fwd {fwd:.1f} us  bwd {bwd:.1f} us | max_seqlen={hint}: fwd {fwd_h:.1f} us  "
          f"bwd {bwd_h:.1f} us  (one sequence, plain: {plain:.1f} us; copy of x {cp:.1f} us)")
