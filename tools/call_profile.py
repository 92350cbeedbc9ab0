"""Where a timed call's GPU time goes (GPU machine; carry python/nanossm/_lib): for each shape,
the call as `bench` times it (triton do_bench, median) and the copy of x, then torch.profiler's
per-kernel GPU time over 50 calls each after a cache flush (the scan, the workspace reset or
memset), and the median gap from a memset's end to the scan's start. Not a test.
usage: PYTHONPATH=python python3 tools/call_profile.py [B,T,R,C:dtype[:bwd] ...]  (dtype f32, f16 or
bf16; bwd: the fused backward as `bench --backward` times it, with the copy of x; default: six
shapes of the bench)"""
import sys
import torch, triton.testing
from torch.profiler import profile, ProfilerActivity
from nanossm import ssm_scan
from nanossm._call import _launch_backward
from nanossm.bench import warm_gpu
warm_gpu()
flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
DT = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
cases = [((2,1024,64,64), torch.float32, ""), ((8,2048,64,64), torch.float32, ""), ((8,2048,64,64), torch.bfloat16, ""),
         ((1,65536,64,64), torch.bfloat16, ""), ((1,65536,64,64), torch.float32, ""), ((16,1024,16,128), torch.float32, "")]
if len(sys.argv) > 1:
    cases = [(tuple(int(v) for v in a.split(":")[0].split(",")), DT[a.split(":")[1]], (a.split(":") + [""])[2])
             for a in sys.argv[1:]]
for shape, dt, mode in cases:
    B,T,R,C = shape
    A = (-torch.rand(B,T,R, device="cuda")*0.1).cumsum(1)
    x = torch.randn(shape, device="cuda").to(dt)
    call = lambda: ssm_scan(A, x)
    if mode == "bwd":
        out, g = ssm_scan(A, x), torch.randn_like(x)
        dx, dA = torch.empty_like(x), torch.empty_like(A)
        call = lambda: _launch_backward(A, x, out, g, dx, dA, None, None, None, None, False)
    med = triton.testing.do_bench(call, warmup=25, rep=100, return_mode="median")
    cp = triton.testing.do_bench(lambda: x.clone(), warmup=25, rep=100, return_mode="median")
    n = 50
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            flush.zero_(); call()
        torch.cuda.synchronize()
    print(f"{str(dt)[6:]:>9} {str(shape):>20} {mode or 'fwd'} do_bench {med*1e3:.1f}us copy {cp*1e3:.1f}us")
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if t / n > 0.2 and ev.count >= n:
            print(f"      {ev.key[:60]:60s} count {ev.count:4d}  {t / ev.count:8.1f} us each")
    try:
        evs = sorted([e for e in prof.events() if e.device_type.name == "CUDA"], key=lambda e: e.time_range.start)
        gaps, spans = [], []
        for a, b in zip(evs, evs[1:]):
            if "nanossm" in b.name and "nanossm" not in a.name and "zero" not in a.name.lower() and "fill" not in a.name.lower():
                gaps.append(b.time_range.start - a.time_range.end); spans.append(b.time_range.end - a.time_range.start)
        last = max(i for i, e in enumerate(evs) if "nanossm" not in e.name) if evs else 0
        seq = [f"{e.name[:28]} {e.time_range.end - e.time_range.start:.1f}" for e in evs[last + 1:]]
        if seq:  # the last call's kernels in launch order (three passes: pass 1, 2, 3), us each
            print(f"      last call: {' | '.join(seq)}; span {evs[-1].time_range.end - evs[last + 1].time_range.start:.1f} us")
        if gaps:
            gaps.sort(); spans.sort()
            print(f"      gap memset->scan median {gaps[len(gaps)//2]:.1f} us; memset start->scan end median {spans[len(spans)//2]:.1f} us ({[e.name[:30] for e in evs[:4]]})")
    except Exception as ex:
        print("      (no gaps:", ex, ")")
