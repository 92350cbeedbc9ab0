"""Where the host time of a small call goes: each piece of nanossm.ssm_scan timed alone,
microseconds per call, the best of R runs of N back-to-back calls (the minimum: the host is
shared and noisy; the minimum is the cost without interference).

usage: python tools/host_profile.py [--device cuda|cpu] [--shape 2,8,64,64] [--runs 15] [--calls N]

On the GPU machine (--device cuda, the default there) this is the small-call budget of the
performance issue. There the GPU is first given a long sleep kernel, so that during the timed
calls it is busy: the launch queue neither drains (the GPU would then set no pace) nor fills (a
full queue blocks the host at the GPU's rate). So each row is host time alone, and N defaults to
500 calls (under the queue's depth). On a CPU-only machine (--device cpu, the CPU flavour of the
library) the Python and Go parts are the same code; only the launch differs (the CPU backend
computes the scan instead of enqueueing it, so "library call" there includes the scan of the
given shape: use a tiny shape such as 1,1,1,4 to see the host path).
"""
import argparse
import ctypes
import sys
import time

import torch

sys.path.insert(0, "python")
from nanossm import _call, _loader, op, ssm_scan, ssm_step  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", default="2,8,64,64")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--calls", type=int, default=None, help="calls per run (default: 500 on cuda, 5000 on cpu)")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    calls = args.calls or (500 if cuda else 5000)

    def per_call(f):
        for _ in range(200):
            f()
        sync()
        best = 1e9
        for _ in range(args.runs):
            if cuda:
                torch.cuda._sleep(100_000_000)  # ~50 ms of GPU time: longer than the calls below
            t0 = time.perf_counter()
            for _ in range(calls):
                f()
            best = min(best, (time.perf_counter() - t0) / calls * 1e6)
            sync()
        return best

    B, T, R, C = (int(v) for v in args.shape.split(","))
    A = torch.cumsum(-0.2 * torch.rand(B, T, R, device=args.device), 1)
    x = torch.randn(B, T, R, C, device=args.device)
    out = torch.empty_like(x)
    h0 = torch.randn(B, R, C, device=args.device)
    g, dx, dA = torch.randn_like(x), torch.empty_like(x), torch.empty_like(A)
    ssm_scan(A, x)
    L = _loader.lib()
    _call._launch_plain(A, x, out)  # leaves this call's descriptors in the thread's buffer
    pA, px, po, popt = _call._tls.plain_args
    dev = x.get_device() if cuda else -1
    stream = _call._raw_stream(dev) if cuda else None
    n = ctypes.c_int64(0)
    print(f"# {L._name} ({_loader.flavour()[0]} flavour), {args.device}, shape {tuple(x.shape)}, "
          f"best of {args.runs} x {calls} calls" + (", host time alone (GPU kept busy)" if cuda else ""))
    rows = {
        "ssm_scan(A, x)": lambda: ssm_scan(A, x),
        "op._plain_ok (the fast path's checks)": lambda: op._plain_ok(A, x),
        "_call._plain (empty_like + pack + call)": lambda: _call._plain(A, x),
        "_call._launch_plain (pack + call; the fast path)": lambda: _call._launch_plain(A, x, out),
        "_call._launch (pack + call; the general path)": lambda: _call._launch(A, x, out, None, None, False),
        "library call alone (Go: validate, plan, launch)": lambda: L.nanossm_scan(pA, px, po, popt, dev, stream),
        "workspace size (Go: validate, plan; no launch)": lambda: L.nanossm_scan_workspace_size(
            pA, px, po, popt, dev, ctypes.byref(n)),
        "ctypes call of nanossm_version": lambda: L.nanossm_version(),
        "pack the three descriptors": lambda: _call._PLAIN.pack_into(
            _call._buffer()[0], 0, A.data_ptr(), 0, 3, *A.shape, *A.stride(), x.data_ptr(), 0, 4, *x.shape,
            *x.stride(), out.data_ptr(), 0, 4, *x.shape, *out.stride()),
        "ssm_scan(A, x, initial_state=h0, return_final_state=True)": lambda: ssm_scan(
            A, x, initial_state=h0, return_final_state=True),
        "ssm_scan(A, x, reverse=True)": lambda: ssm_scan(A, x, reverse=True),
        "ssm_step(state, log_a, x_t) (decode)": lambda: ssm_step(h0, A[:, 0], x[:, 0]),
        "_call._launch_backward (pack + call)": lambda: _call._launch_backward(
            A, x, out, g, dx, dA, None, None, None, None, False),
        "torch.empty_like(x) for out (the fast path's)": lambda: torch.empty_like(x, memory_format=torch.contiguous_format),
        "torch.empty(shape, dtype=, device=) for out": lambda: torch.empty(x.shape, dtype=x.dtype, device=x.device),
        "x.clone() (a torch op, for scale)": lambda: x.clone(),
    }
    if cuda:
        rows["raw stream handle"] = lambda: _call._raw_stream(dev)
    for name, f in rows.items():
        print(f"{per_call(f):8.2f} us  {name}")


if __name__ == "__main__":
    main()
