"""python -m nanossm.bench: time nanossm against the copy floor and the baselines.

For each shape: nanossm, a device-to-device copy of x (the floor: the scan reads x once and
writes out once), the original einsum baseline (where its (B,T,T,R) matrix fits), a Triton O(T^2)
kernel in the original design (one program per (b,t,r), where it finishes in reasonable time),
and optional peers when installed. Median times with a cold L2 (a 256 MB buffer zeroed before every
repetition), by events (triton.testing.do_bench), or nanossm and the copy by CUDA-graph replay
(--timing graph: no host time between their launches). Prints a table and writes a PNG plot. Not a
test: no pass/fail.
"""
import argparse
import json
import math

import torch

from nanossm import ssm_scan
from nanossm.reference import rel_err, ssm_scan_chunked64, ssm_scan_einsum

DEFAULT_SHAPES = [(2, 8, 64, 64), (2, 1024, 64, 64), (8, 2048, 64, 64), (4, 8192, 64, 64),
                  (1, 65536, 64, 64), (16, 1024, 16, 128), (1, 262144, 4, 32)]
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


# How bench_ms times a call: "events" (the default) times the call itself
# (triton.testing.do_bench), where a small call would read the host's time as well if the host
# fell behind the GPU; "graph" replays the call's launches captured once in a CUDA graph, so the
# host's time between launches (Python, ctypes, allocation) cannot stretch what the GPU takes, at
# ~1 us more per replay on the H200 (session 20: the two agree within 0.035 of the copy's ratio
# from (2,1024,64,64) up; (2,8,64,64) 7.9 us by graph, 6.9 by events).
TIMING = "events"


def bench_ms(fn, graph=None):
    """Median milliseconds of fn on the GPU with a cold L2 (a 256 MB buffer zeroed before each
    repetition): by graph replay (TIMING, or graph=True; fn must be capturable) or by events."""
    if not (TIMING == "graph" if graph is None else graph):
        import triton.testing
        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    return _graph_ms(fn)


def copy_ms(x, dst):
    """The floor: a copy of x into dst, the faster of the driver's device-to-device copy (copy_)
    and an elementwise kernel's (x * 1), which time alike (session 20: within 1.5%). In two
    processes of session 20 copy_ of 537 MB or more read 1.5x its usual time (0.39 ms for 0.26)
    and put the scan under its floor; the second copy guards the floor against one slow path."""
    return min(bench_ms(lambda: dst.copy_(x)), bench_ms(lambda: torch.mul(x, 1, out=dst)))


def _graph_ms(fn, warmup_ms=25, rep_ms=100):
    """do_bench's method over replays of fn captured in a CUDA graph: flush L2, record, replay,
    record; repetitions for about rep_ms of flushes and replays, the median of their times."""
    import statistics
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # (warm calls off the capture: caches, allocations, workspaces)
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    flush = torch.empty(int(256e6 // 4), dtype=torch.int, device="cuda")

    def times(n):
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for start, end in ev:
            flush.zero_()
            start.record()
            graph.replay()
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in ev]

    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0.record()
    times(5)
    t1.record()
    torch.cuda.synchronize()
    per_rep = max(t0.elapsed_time(t1) / 5, 1e-3)  # ms per flush and replay, as do_bench estimates
    times(max(1, int(warmup_ms / per_rep)))
    result = statistics.median(times(max(1, int(rep_ms / per_rep))))
    del graph
    return result


def warm_gpu(seconds=1.0):
    """Keep the GPU busy for a moment before the first timing: an idle GPU clocks down (345 MHz
    idle on the H200), and the first shapes timed while it ramps up read up to 1.5x slow."""
    import time
    big = torch.empty(1 << 28, device="cuda")
    dst = torch.empty_like(big)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            dst.copy_(big)
        torch.cuda.synchronize()
    del big, dst


def host_us(fn, n=2000):
    """Wall-clock microseconds per call of back-to-back calls, synchronising once at the end:
    what a Python loop of small calls sees (host overhead when the kernels are tiny)."""
    import time
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def triton_quadratic():
    """The original design: one program per (b, t, r) sums exp(A[t]-A[j]) x[j] over j <= t."""
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(A, X, O, T, R, C: tl.constexpr, BJ: tl.constexpr):
        pid = tl.program_id(0)
        r = pid % R
        t = (pid // R) % T
        b = pid // (R * T)
        c = tl.arange(0, C)
        a_t = tl.load(A + (b * T + t) * R + r)
        acc = tl.zeros([C], dtype=tl.float32)
        for j0 in range(0, t + 1, BJ):
            j = j0 + tl.arange(0, BJ)
            m = j <= t
            a_j = tl.load(A + (b * T + j) * R + r, mask=m, other=0.0)
            w = tl.where(m, tl.exp(a_t - a_j), 0.0)
            xv = tl.load(X + ((b * T + j[:, None]) * R + r) * C + c[None, :], mask=m[:, None], other=0.0)
            acc += tl.sum(w[:, None] * xv.to(tl.float32), axis=0)
        tl.store(O + ((b * T + t) * R + r) * C + c, acc.to(O.dtype.element_ty))

    def run(A, x):
        B, T, R, C = x.shape
        out = torch.empty_like(x)
        kernel[(B * T * R,)](A, x, out, T, R, C, BJ=32)
        return out
    return run


def peers():
    found = {}
    try:
        from accelerated_scan.warp import scan as warp_scan  # (B, D, T) layout, gates then tokens

        def acc(A, x):
            B, T, R, C = x.shape
            gates = torch.exp(torch.diff(A, dim=1, prepend=torch.zeros_like(A[:, :1])))
            g = gates[..., None].expand(B, T, R, C).permute(0, 2, 3, 1).reshape(B, R * C, T).contiguous()
            tok = x.permute(0, 2, 3, 1).reshape(B, R * C, T).contiguous()
            return warp_scan(g, tok).reshape(B, R, C, T).permute(0, 3, 1, 2)
        found["accelerated-scan (incl. layout)"] = acc
    except ImportError:
        pass
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shapes", default=None, help="B,T,R,C;B,T,R,C;...")
    ap.add_argument("--dtypes", default="f32", help="comma list of f32,f16,bf16")
    ap.add_argument("--plot", default="docs/bench.png")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--backward", action="store_true", help="time the fused backward and a training step")
    ap.add_argument("--packed", action="store_true", help="time packed sequences against the plain scan")
    ap.add_argument("--timing", choices=["events", "graph"], default="events",
                    help="time nanossm and the copy by events around the call (default) or by CUDA-graph "
                         "replay (the baselines always by events)")
    args = ap.parse_args()
    global TIMING
    TIMING = args.timing
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")] if args.shapes else DEFAULT_SHAPES
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}")
    warm_gpu()
    if args.backward or args.packed:
        from .bench_more import bench_backward, bench_packed
        rows = (bench_backward if args.backward else bench_packed)(shapes, args.dtypes.split(","))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
        return
    tri = None if args.no_baselines else triton_quadratic()
    others = peers()
    rows = []
    for dname in args.dtypes.split(","):
        dtype = DTYPES[dname]
        for shape in shapes:
            B, T, R, C = shape
            g = torch.Generator(device=dev).manual_seed(0)
            A = torch.cumsum(-0.2 * torch.rand(B, T, R, device=dev, generator=g), dim=1)
            x = torch.randn(B, T, R, C, device=dev, generator=g).to(dtype)
            dst = torch.empty_like(x)
            row = {"shape": shape, "dtype": dname, "bytes": 2 * x.numel() * x.element_size()}
            row["copy"] = copy_ms(x, dst)
            out = ssm_scan(A, x)
            row["err"] = rel_err(out, ssm_scan_chunked64(A, x))
            row["nanossm"] = bench_ms(lambda: ssm_scan(A, x))
            if x.numel() <= 1 << 20:
                row["host_us"] = host_us(lambda: ssm_scan(A, x))
                row["copy_host_us"] = host_us(lambda: dst.copy_(x))
            if not args.no_baselines and B * T * T * R * 4 <= 8e9:
                row["einsum"] = bench_ms(lambda: ssm_scan_einsum(A, x), graph=False)
            if tri is not None and B * T * T * R * C <= 4e11 and C & (C - 1) == 0:
                row["triton_T2"] = bench_ms(lambda: tri(A, x), graph=False)
            for name, fn in others.items():
                row[name] = bench_ms(lambda: fn(A, x), graph=False)
            rows.append(row)
            print_row(row, others)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    plot(rows, args.plot)


def print_row(row, others):
    gbs = row["bytes"] / row["nanossm"] / 1e6
    extra = "".join(f"  {k} {row[k]:.4f}" for k in ["einsum", "triton_T2", *others] if k in row)
    if "host_us" in row:
        extra += f"  per-call wall {row['host_us']:.1f} us (copy_ {row['copy_host_us']:.1f} us)"
    print(f"{row['dtype']:>4} {str(row['shape']):>20}  copy {row['copy']:.4f} ms  nanossm {row['nanossm']:.4f} ms"
          f"  {gbs:7.0f} GB/s  nanossm/copy {row['nanossm'] / row['copy']:.3f}  err {row['err']:.1e}{extra}")


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    labels = [f"{r['dtype']} {','.join(map(str, r['shape']))}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4))
    ratio = [r["nanossm"] / r["copy"] for r in rows]
    ax.bar(range(len(rows)), ratio, color="tab:blue", label="nanossm / copy of x")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(1.11, color="tab:red", ls="--", lw=0.8, label="fp32 target 1.11")
    ax.set_xticks(range(len(rows)), labels, rotation=40, ha="right", fontsize=7)
    ax.set_ylabel("time / copy time (lower is better)")
    ax.set_title(f"nanossm forward vs the copy floor ({torch.cuda.get_device_name()})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    if path != "/dev/null":
        fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    # (run by -m this file is __main__, a module apart from the nanossm.bench that bench_more
    # imports: main runs in that one, so TIMING is one setting for both)
    from nanossm import bench
    bench.main()
