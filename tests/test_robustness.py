"""Never crash the host: the bad-input matrix, NaN/Inf, in place, extreme decays, concurrency,
leaks, CUDA errors and > 2^31 elements. GPU rows run where a GPU is, and are skipped (saying why)
elsewhere. NANOSSM_SOAK_SECONDS sets how long the concurrency soak runs (default: a short one)."""
import ctypes
import os
import threading
import time

import pytest
import torch

from conftest import CUDA_OK, DEVICES, make_inputs, requires_cuda
import nanossm
from nanossm import NanossmError, _call, _loader, ssm_scan
from nanossm.reference import rel_err, ssm_scan_chunked64, ssm_scan_sequential


def bad_input_matrix(device):
    """(name, call, exception, message) rows: every one must raise its exception naming the
    argument, and leave the process and earlier results intact."""
    A, x = make_inputs((2, 5, 3, 4), torch.float32, device)
    h0 = torch.zeros(2, 3, 4, device=device)
    both = torch.randn(2 * x.numel(), device=device)  # x and out as overlapping windows of one buffer
    rows = [
        ("x with 3 dims", lambda: ssm_scan(A, x[0]), ValueError, "x: expected 4 dims (B,T,R,C), got 3"),
        ("x with 5 dims", lambda: ssm_scan(A, x[None]), ValueError, "x: expected 4 dims (B,T,R,C), got 5"),
        ("A with 2 dims", lambda: ssm_scan(A[0], x), ValueError, "cumsum_A: expected 3 dims (B,T,R), got 2"),
        ("A with 4 dims", lambda: ssm_scan(A[..., None], x), ValueError, "cumsum_A: expected 3 dims (B,T,R), got 4"),
        ("B mismatch", lambda: ssm_scan(A[:1], x), ValueError, "A: shape (1,5,3) does not match x's (B,T,R) = (2,5,3)"),
        ("T mismatch", lambda: ssm_scan(A[:, :4], x), ValueError, "A: shape (2,4,3) does not match"),
        ("R mismatch", lambda: ssm_scan(A[:, :, :2], x), ValueError, "A: shape (2,5,2) does not match"),
        ("initial_state B", lambda: ssm_scan(A, x, initial_state=h0[:1]), ValueError, "initial_state: expected shape (2,3,4), got (1,3,4)"),
        ("initial_state C", lambda: ssm_scan(A, x, initial_state=h0[..., :3]), ValueError, "initial_state: expected shape (2,3,4), got (2,3,3)"),
        ("initial_state dims", lambda: ssm_scan(A, x, initial_state=h0[0]), ValueError, "initial_state: expected 3 dims (B,R,C), got 2"),
        ("int64 x", lambda: ssm_scan(A, x.long()), TypeError, "x: expected a floating dtype, got torch.int64"),
        ("int32 A", lambda: ssm_scan(A.int(), x), TypeError, "cumsum_A: expected a floating dtype, got torch.int32"),
        ("complex x", lambda: ssm_scan(A, x.to(torch.complex64)), TypeError, "x: expected a floating dtype, got torch.complex64"),
        ("bool x", lambda: ssm_scan(A, x > 0), TypeError, "x: expected a floating dtype, got torch.bool"),
        ("list x", lambda: ssm_scan(A, [[1.0]]), TypeError, "x: expected a torch.Tensor, got list"),
        ("None A", lambda: ssm_scan(None, x), TypeError, "cumsum_A: expected a torch.Tensor, got NoneType"),
        ("T = 0", lambda: ssm_scan(A[:, :0], x[:, :0]), ValueError, "x: every size must be >= 1"),
        ("B = 0", lambda: ssm_scan(A[:0], x[:0]), ValueError, "x: every size must be >= 1"),
        ("C = 0", lambda: ssm_scan(A, x[..., :0]), ValueError, "x: every size must be >= 1"),
        ("out shape", lambda: ssm_scan(A, x, out=torch.empty(2, 5, 3, 5, device=device)), ValueError, "out: expected float32 (2,5,3,4) like x, got float32 (2,5,3,5)"),
        ("out dtype", lambda: ssm_scan(A, x, out=torch.empty(2, 5, 3, 4, device=device, dtype=torch.float64)), ValueError, "out: expected float32 (2,5,3,4) like x, got float64"),
        ("out overlapping strides", lambda: ssm_scan(A, x, out=torch.empty(1, device=device).expand(2, 5, 3, 4)), ValueError, "out: strides (0,0,0,0) make elements overlap"),
        ("out partly over x", lambda: ssm_scan(A, both[:x.numel()].view_as(x), out=both[1:x.numel() + 1].view_as(x)), ValueError, "out: overlaps x without being x itself"),
        ("out over A", lambda: ssm_scan(both[:A.numel()].view_as(A), x, out=both[:x.numel()].view_as(x)), ValueError, "out: overlaps A"),
        ("reverse with initial_state", lambda: ssm_scan(A, x, initial_state=h0, reverse=True), NanossmError, "initial_state: not defined for reverse scans"),
        ("cu_seqlens with B = 2", lambda: ssm_scan(A, x, cu_seqlens=torch.tensor([0, 5], device=device)), ValueError, "cu_seqlens: packed sequences need B = 1, got B = 2"),
        ("cu_seqlens float", lambda: ssm_scan(A, x, cu_seqlens=torch.tensor([0.0, 5.0])), TypeError, "cu_seqlens: expected int32 or int64, got torch.float32"),
        ("x on the meta device", lambda: ssm_scan(A.to("meta"), x.to("meta")), ValueError, "x: expected a CPU or CUDA tensor, got one on meta"),
        ("out with gradients", lambda: ssm_scan(A, x.clone().requires_grad_(), out=torch.empty_like(x)), ValueError, "out: not supported when gradients are required"),
    ]
    if device == "cuda":
        rows += [
            ("float64 x on CUDA", lambda: ssm_scan(A, x.double()), TypeError, "x: expected float32, float16 or bfloat16 on CUDA, got torch.float64"),
            ("A on CPU, x on CUDA", lambda: ssm_scan(A.cpu(), x), ValueError, "cumsum_A: on cpu but x is on cuda:0"),
            ("x on CPU, A on CUDA", lambda: ssm_scan(A, x.cpu()), ValueError, "cumsum_A: on cuda:0 but x is on cpu"),
            ("initial_state on CPU", lambda: ssm_scan(A, x, initial_state=h0.cpu()), ValueError, "initial_state: on cpu but x is on cuda:0"),
        ]
    return rows


@pytest.mark.parametrize("device", DEVICES)
def test_bad_input_matrix(device):
    A, x = make_inputs((2, 77, 3, 8), torch.float32, device, seed=20)
    before = ssm_scan(A, x)
    kept = before.clone()
    rows = bad_input_matrix(device)
    for name, call, exc, msg in rows:
        with pytest.raises(exc) as e:
            call()
        assert msg in str(e.value), f"{name}: {msg!r} not in {str(e.value)!r}"
    assert torch.equal(before, kept), "an earlier result was changed"
    assert torch.equal(ssm_scan(A, x), before), "the library gives a different answer after the errors"
    print(f"{len(rows)} rows on {device}")


@pytest.mark.parametrize("device", DEVICES)
def test_in_place(device):
    A, x = make_inputs((2, 300, 3, 8), torch.float32, device, seed=21)
    ref, _ = ssm_scan_sequential(A.cpu(), x.cpu())
    y = x.clone()
    res = ssm_scan(A, y, out=y)
    assert res.data_ptr() == y.data_ptr()
    assert rel_err(y.cpu(), ref) <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_nan_and_inf_propagate_like_the_reference(device):
    A, x = make_inputs((1, 300, 2, 4), torch.float32, device, seed=22)
    x[0, 10, 0, 1] = float("nan")
    x[0, 200, 1, 2] = float("inf")
    A = A.clone()
    A[0, 150:, 1] = float("nan")
    out = ssm_scan(A, x).cpu().double()
    ref, _ = ssm_scan_sequential(A.cpu(), x.cpu())
    fin = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(out), fin), "non-finite pattern differs from the reference"
    assert (~fin).any() and fin.any()
    assert ((out[fin] - ref[fin]).norm() / ref[fin].norm()).item() <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("decay", [(-1e-4, 0.0), (-20.5, -19.5)], ids=["near1", "near0"])
def test_long_sequence_extreme_decays(device, decay):
    A, x = make_inputs((1, 65536, 2, 4), torch.float32, device, seed=23, lo=decay[0], hi=decay[1])
    err = rel_err(ssm_scan(A, x).cpu(), ssm_scan_chunked64(A.cpu(), x.cpu()))
    assert err <= 1e-5, f"rel err {err:.2e}"


def soak_seconds(default):
    return float(os.environ.get("NANOSSM_SOAK_SECONDS", default))


@pytest.mark.parametrize("device", DEVICES)
def test_concurrent_threads_bit_identical(device):
    """16 threads, each on its own shape (and CUDA stream), forward and backward: every result is
    bit-identical to the single-threaded one."""
    shapes = [(1 + i % 3, 50 + 37 * i, 1 + i % 4, 4 + 4 * (i % 3)) for i in range(16)]
    inputs, expected = [], []
    for i, s in enumerate(shapes):
        A, x = make_inputs(s, torch.float32, device, seed=100 + i)
        g = torch.randn(s, generator=torch.Generator().manual_seed(i)).to(device)
        inputs.append((A, x, g))
        expected.append(run_fwd_bwd(A, x, g))
    deadline = time.monotonic() + soak_seconds(2.0)
    failures, counts = [], [0] * 16

    def worker(i):
        stream = torch.cuda.Stream() if device == "cuda" else None
        try:
            while time.monotonic() < deadline or counts[i] < 3:
                if stream is not None:
                    with torch.cuda.stream(stream):
                        got = run_fwd_bwd(*inputs[i])
                    stream.synchronize()
                else:
                    got = run_fwd_bwd(*inputs[i])
                if not all(torch.equal(a, b) for a, b in zip(got, expected[i])):
                    failures.append(f"thread {i}: results differ")
                    return
                counts[i] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(f"thread {i}: {e!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    print(f"16 threads x {sum(counts)} forward+backward calls on {device}")


def run_fwd_bwd(A, x, g):
    A, x = A.clone().requires_grad_(), x.clone().requires_grad_()
    out = ssm_scan(A, x)
    out.backward(g)
    return out.detach(), A.grad, x.grad


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("device", DEVICES)
def test_no_goroutine_or_memory_growth(device):
    A, x = make_inputs((1, 8, 2, 4), torch.float32, device, seed=24)
    n = int(os.environ.get("NANOSSM_LEAK_CALLS", 100_000))
    for _ in range(2000):
        ssm_scan(A, x)
    g0, heap0 = _loader.runtime_stats()
    rss0 = rss_bytes()
    for _ in range(n):
        ssm_scan(A, x)
    if device == "cuda":
        torch.cuda.synchronize()
    g1, heap1 = _loader.runtime_stats()
    rss1 = rss_bytes()
    print(f"{n} calls on {device}: goroutines {g0} -> {g1}, Go heap {heap0} -> {heap1}, RSS {rss0 >> 20} -> {rss1 >> 20} MiB")
    assert g1 <= g0 + 2
    assert heap1 < heap0 + (8 << 20)
    assert rss1 < rss0 + (64 << 20)


@requires_cuda
def test_cuda_errors_become_exceptions_with_the_cuda_name():
    """A workspace that is not device memory makes the driver refuse it (the memset, or, where the
    workspace is reset by a kernel, the pointer query before it): the call raises NanossmError
    carrying CUDA_ERROR_..., and the next call works."""
    A, x = make_inputs((1, 1000, 2, 8), torch.float32, "cuda", seed=25)
    out = torch.empty_like(x)
    host = torch.empty(1 << 20, dtype=torch.uint8)  # pageable host memory
    L = _loader.lib()
    buf, addr = _call._buffer()
    _call._launch(A, x, out, None, None, False)  # leaves this call's descriptors in the buffer
    _call._OPT_WS.pack_into(buf, _call._OFF_WS, (host.data_ptr() + 255) // 256 * 256, host.numel() - 256)
    with pytest.raises(NanossmError) as e:
        _loader.check(L.nanossm_scan(addr, addr + 80, addr + 160, addr + 240, 0, _call._raw_stream(0)))
    assert "CUDA_ERROR_" in str(e.value) and e.value.status == 3
    assert rel_err(ssm_scan(A, x).cpu(), ssm_scan_sequential(A.cpu(), x.cpu())[0]) <= 1e-5
    with pytest.raises(ValueError, match="device: cuda:7 does not exist"):
        _loader.check(L.nanossm_scan(addr, addr + 80, addr + 160, addr + 240, 7, None))


@requires_cuda
def test_more_than_2_31_elements():
    """x of 2^31 + 16.8M half elements (4.3 GB): 64-bit indexing; checked on the first and last
    (r, c) columns, whose elements sit at the lowest and highest addresses."""
    B, T, R, C = 2, 65536, 128, 129  # C = 129: the scalar path; B*T*R*C = 2.164e9 > 2^31
    assert B * T * R * C > 2**31
    g = torch.Generator(device="cuda").manual_seed(26)
    A = torch.cumsum(-0.2 * torch.rand(B, T, R, device="cuda", generator=g), 1)
    x = torch.randn(B, T, R, C, device="cuda", generator=g, dtype=torch.float16)
    out = ssm_scan(A, x)
    for r, c in [(0, 0), (R - 1, C - 1), (R // 2, 64)]:
        ref = ssm_scan_chunked64(A[:, :, r:r + 1], x[:, :, r:r + 1, c:c + 1])
        err = rel_err(out[:, :, r:r + 1, c:c + 1], ref)
        assert err <= 1e-2, f"(r,c)=({r},{c}): rel err {err:.2e}"
    del out, x
    torch.cuda.empty_cache()
