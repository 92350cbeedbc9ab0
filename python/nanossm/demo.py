"""python -m nanossm.demo: one scan on the GPU if there is one (else the CPU), checked against
the float64 reference and timed against the plain sequential scan and a copy of x."""
import argparse
import time

import torch

import nanossm
from nanossm.reference import rel_err, ssm_scan_sequential


def sequential_fp32(A, x):
    """The plain O(T) loop in the input precision: one torch op per step."""
    h = torch.zeros_like(x[:, 0])
    out = torch.empty_like(x)
    prev = torch.zeros_like(A[:, 0])
    for t in range(x.shape[1]):
        h = torch.exp(A[:, t] - prev).unsqueeze(-1) * h + x[:, t]
        prev = A[:, t]
        out[:, t] = h
    return out


def timed(fn, device, reps):
    """Median seconds per call after a warm-up. On CUDA by device events with a cold L2, as
    `python -m nanossm.bench` times: each call follows the zeroing of a 256 MB buffer, which keeps
    the GPU busy while the host prepares the call, so the events hold the GPU's work alone (with
    a synchronisation per call they would hold the host's checks and launch too). On the CPU by
    perf_counter."""
    fn()
    if device.type == "cuda":
        try:
            flush = torch.empty(64 * 2**20, dtype=torch.int32, device=device)
        except torch.cuda.OutOfMemoryError:  # a small GPU: no flush (warm L2, the host's time may show)
            flush = None
        events = []
        for _ in range(reps):
            if flush is not None:
                flush.zero_()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            events.append((s, e))
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) / 1e3 for s, e in events]
    else:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default=None, help="B,T,R,C")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if usable)")
    args = ap.parse_args()
    info = nanossm.library_info()
    use_cuda = args.device == "cuda" or (args.device is None and info["flavour"] == "cuda"
                                         and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    shape = tuple(int(v) for v in args.shape.split(",")) if args.shape else (
        (2, 1024, 64, 64) if use_cuda else (2, 512, 16, 32))
    B, T, R, C = shape
    print(f"nanossm {info['version']} ({info['flavour']} flavour: {info['reason']}) on {device}, "
          f"(B,T,R,C) = {shape}")

    g = torch.Generator().manual_seed(0)
    log_a = -0.2 * torch.rand(B, T, R, generator=g)  # decays in (exp(-0.2), 1]
    A = torch.cumsum(log_a, dim=1).to(device)
    x = torch.randn(B, T, R, C, generator=g).to(device)

    out = nanossm.ssm_scan(A, x)
    ref, _ = ssm_scan_sequential(A.cpu(), x.cpu())
    err = rel_err(out.cpu(), ref)
    ok = err <= 1e-5
    print(f"check vs float64 sequential reference: rel err {err:.2e} ({'OK' if ok else 'FAIL'}, tol 1e-5)")

    reps = 20 if use_cuda else 5
    t_scan = timed(lambda: nanossm.ssm_scan(A, x), device, reps)
    t_seq = timed(lambda: sequential_fp32(A, x), device, 3)
    t_copy = timed(lambda: x.clone(), device, reps)
    print(f"nanossm.ssm_scan   {t_scan * 1e3:9.3f} ms")
    print(f"sequential loop    {t_seq * 1e3:9.3f} ms   ({t_seq / t_scan:.0f}x slower)")
    print(f"copy of x (floor)  {t_copy * 1e3:9.3f} ms   (scan / copy = {t_scan / t_copy:.2f})")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
