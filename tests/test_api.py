"""Errors, gradients and safe loading of the native library."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import DEVICES, dA_err, make_inputs
from nanossm import ssm_scan
from nanossm.reference import rel_err, ssm_scan_einsum

PYDIR = os.path.join(os.path.dirname(__file__), "..", "python")


def run_py(code, env_extra=None, timeout=120):
    """Run code in a fresh interpreter; returns the completed process."""
    env = dict(os.environ, PYTHONPATH=PYDIR, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("device", DEVICES)
def test_bad_inputs_raise_naming_the_argument(device):
    A, x = make_inputs((2, 5, 3, 4), torch.float32, device)
    cases = [
        (lambda: ssm_scan(A, x[0]), ValueError, "x: expected 4 dims (B,T,R,C), got 3"),
        (lambda: ssm_scan(A[0], x), ValueError, "cumsum_A: expected 3 dims (B,T,R), got 2"),
        (lambda: ssm_scan(A[:, :4], x), ValueError, "A: shape (2,4,3) does not match x's (B,T,R) = (2,5,3)"),
        (lambda: ssm_scan(A, x.to(torch.int64)), TypeError, "x: expected a floating dtype, got torch.int64"),
        (lambda: ssm_scan(A.to(torch.int32), x), TypeError, "cumsum_A: expected a floating dtype"),
        (lambda: ssm_scan([1.0], x), TypeError, "cumsum_A: expected a torch.Tensor, got list"),
        (lambda: ssm_scan(A, x[:, :0]), ValueError, "x: every size must be >= 1"),
        (lambda: ssm_scan(A, x, initial_state=torch.zeros(2, 3, 5, device=device)), ValueError,
         "initial_state: expected shape (2,3,4), got (2,3,5)"),
        (lambda: ssm_scan(A, x, out=torch.empty(2, 5, 3, 5, device=device)), ValueError, "out: expected float32 (2,5,3,4)"),
    ]
    if device == "cuda":
        cases += [
            (lambda: ssm_scan(A.cpu(), x), ValueError, "cumsum_A: on cpu but x is on cuda:0"),
            (lambda: ssm_scan(A, x.double()), TypeError, "x: expected float32, float16 or bfloat16 on CUDA, got torch.float64"),
        ]
    for call, exc, msg in cases:
        with pytest.raises(exc) as e:
            call()
        assert msg in str(e.value), f"{msg!r} not in {str(e.value)!r}"
    # the library still works after every refusal
    assert rel_err(ssm_scan(A, x), ssm_scan_einsum(A.double(), x.double())) <= 1e-5


def test_gradcheck_cpu_float64():
    A, x = make_inputs((2, 6, 2, 3), torch.float64, "cpu", seed=8)
    A, x = A.double().requires_grad_(), x.requires_grad_()
    h0 = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, v: ssm_scan(a, v), (A, x))
    assert torch.autograd.gradcheck(lambda a, v, h: ssm_scan(a, v, initial_state=h, return_final_state=True),
                                    (A, x, h0))
    assert torch.autograd.gradcheck(lambda a, v: ssm_scan(a, v, reverse=True), (A, x))
    assert torch.autograd.gradcheck(lambda a, v, h: ssm_scan(a, v, initial_state=h), (A, x, h0))
    assert torch.autograd.gradcheck(lambda a, v: ssm_scan(a, v, reverse=True, return_final_state=True), (A, x))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(2, 1, 3, 4), (2, 77, 3, 5), (1, 300, 2, 16)], ids=str)
def test_gradients_match_einsum_autograd(device, shape):
    A, x = make_inputs(shape, torch.float32, device, seed=9)
    g = torch.randn_like(x)
    A1, x1 = A.clone().requires_grad_(), x.clone().requires_grad_()
    (ssm_scan(A1, x1) * g).sum().backward()
    A2, x2 = A.double().requires_grad_(), x.double().requires_grad_()
    out2 = ssm_scan_einsum(A2, x2)
    (out2 * g.double()).sum().backward()
    assert rel_err(x1.grad, x2.grad) <= 1e-5
    # dA sums terms that cancel (exactly when T = 1): relative to their size
    assert dA_err(A1.grad, A2.grad, x, g, out2, x2.grad) <= 1e-4


def test_import_does_not_load_the_library():
    p = run_py("""
        import nanossm
        from nanossm import _loader
        assert not _loader.loaded(), "library loaded at import"
        print("ok")
    """)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr


def test_no_visible_gpu_loads_cpu_flavour_and_survives():
    p = run_py("""
        import torch, nanossm
        from nanossm.reference import rel_err, ssm_scan_sequential
        A = torch.cumsum(-0.2 * torch.rand(2, 33, 3), 1); x = torch.randn(2, 33, 3, 4)
        assert rel_err(nanossm.ssm_scan(A, x), ssm_scan_sequential(A, x)[0]) <= 1e-5
        info = nanossm.library_info()
        assert info["flavour"] == "cpu" and not info["has_cuda"], info
        print("survived", info["reason"])
    """, {"CUDA_VISIBLE_DEVICES": "", "NANOSSM_FLAVOUR": "auto"})
    assert p.returncode == 0 and "survived" in p.stdout, p.stdout + p.stderr


def test_forcing_cuda_where_it_cannot_start_raises():
    p = run_py("""
        import nanossm
        try:
            nanossm.library_info()
        except RuntimeError as e:
            print("raised:", e)
    """, {"CUDA_VISIBLE_DEVICES": "", "NANOSSM_FLAVOUR": "cuda"})
    assert p.returncode == 0 and "raised: nanossm: NANOSSM_FLAVOUR=cuda but CUDA cannot start" in p.stdout, p.stdout + p.stderr


def test_fork_before_first_use_is_harmless_and_after_raises():
    p = run_py("""
        import os, torch, nanossm
        A = torch.cumsum(-0.2 * torch.rand(1, 9, 2), 1); x = torch.randn(1, 9, 2, 3)
        pid = os.fork()
        if pid == 0:  # child of a fork before first use: loads its own library
            nanossm.ssm_scan(A, x); os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0, "child forked before first use failed"
        nanossm.ssm_scan(A, x)  # the parent loads the library now
        pid = os.fork()
        if pid == 0:  # child of a fork after first use: a clear error, not a hang
            try:
                nanossm.ssm_scan(A, x)
            except RuntimeError as e:
                os._exit(7 if "forked after nanossm loaded" in str(e) else 1)
            os._exit(2)
        print("child status", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """, {"NANOSSM_FLAVOUR": "cpu"}, timeout=60)
    assert p.returncode == 0 and "child status 7" in p.stdout, p.stdout + p.stderr


@pytest.mark.parametrize("device", DEVICES)
def test_plain_fast_path_matches_the_general_path(device):
    """The plain call's fast path (no options, no grad) gives the bits of the general path, on
    views too, and calls with options in between do not leak into it (one buffer per thread)."""
    dtypes = [torch.float32, torch.float16, torch.bfloat16] if device == "cuda" else [torch.float32]
    for dtype in dtypes:
        A, x = make_inputs((2, 300, 3, 8), dtype, device, seed=60)
        xt = x.transpose(0, 1).contiguous().transpose(0, 1)  # a strided view
        for xv in (x, xt, x[:, ::2], x[:1].expand(2, -1, -1, -1)):
            Av = A[:, :xv.shape[1]]
            fast = ssm_scan(Av, xv)
            assert fast.is_contiguous()  # what the fast path's workspace cache assumes of out
            general = torch.full_like(xv, float("nan"))
            ssm_scan(Av, xv, out=general)  # the out= path packs every option
            assert torch.equal(fast, general), f"{dtype} {tuple(xv.stride())}"
            ssm_scan(Av, xv, reverse=True, return_final_state=True)  # options in the buffer
            assert torch.equal(ssm_scan(Av, xv), fast)


def _as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


@pytest.mark.parametrize("device", DEVICES)
def test_option_fast_path_matches_the_general_path(device, monkeypatch):
    """Calls with options whose tensors need no conversion (op._options_ok) take a fast path and
    one pack of the whole argument block: the same bits as the general path (a non-contiguous
    initial state, or host offsets for CUDA x, take that one), gradients included, and a
    layout switch between calls (aligned packets, then single channels) reads the right
    workspace size from the caches."""
    from nanossm import _call, op
    taken, options_ok = [], op._options_ok
    monkeypatch.setattr(op, "_options_ok", lambda *a: taken.append(options_ok(*a)) or taken[-1])
    dtypes = [torch.float32, torch.bfloat16] if device == "cuda" else [torch.float32]
    for dtype in dtypes:
        A, x = make_inputs((2, 700, 3, 8), dtype, device, seed=61)
        h0 = torch.randn(2, 3, 8, device=device)
        h0_view = torch.randn(8, 3, 2, device=device).permute(2, 1, 0)  # not contiguous: general path
        h0_view.copy_(h0)
        calls = [  # (the fast path's form, the general path's)
            (lambda: ssm_scan(A, x, initial_state=h0), lambda: ssm_scan(A, x, initial_state=h0_view)),
            (lambda: ssm_scan(A, x, initial_state=h0, return_final_state=True),
             lambda: ssm_scan(A, x, initial_state=h0_view, return_final_state=True)),
            (lambda: ssm_scan(A, x, reverse=True, return_final_state=True),
             lambda: ssm_scan(A.double().float(), x, reverse=True, return_final_state=True,
                              out=torch.empty_like(x))),  # (out=: the general path)
        ]
        for k, (fast, general) in enumerate(calls):
            for f, g in zip(_as_tuple(fast()), _as_tuple(general())):
                assert torch.equal(f, g), f"{dtype} call {k}"
        Ap, xp = A.reshape(1, 1400, 3), x.reshape(1, 1400, 3, 8)
        cu = torch.tensor([0, 3, 3, 900, 1400], dtype=torch.int32)
        h0p = torch.randn(4, 3, 8, device=device)
        fast = ssm_scan(Ap, xp, cu_seqlens=cu.to(device), initial_state=h0p, return_final_state=True)
        general = ssm_scan(Ap, xp, cu_seqlens=cu, initial_state=h0p.transpose(0, 2).contiguous().transpose(0, 2),
                          return_final_state=True)
        assert torch.equal(fast[0], general[0]) and torch.equal(fast[1], general[1]), dtype
        # gradients: through the fast path (h0 a contiguous leaf) and the general one (a view)
        grads = []
        for init in (h0.clone(), h0_view.clone().permute(2, 1, 0).contiguous().permute(2, 1, 0)):
            Ag, xg, hg = A.clone().requires_grad_(), x.clone().requires_grad_(), init.requires_grad_()
            y, hT = ssm_scan(Ag, xg, initial_state=hg, return_final_state=True)
            (y.float().square().sum() + hT.sum()).backward()
            grads.append((Ag.grad, xg.grad, hg.grad))
        for u, v in zip(*grads):
            assert torch.equal(u, v), dtype
    assert True in taken and False in taken  # both paths ran
    if device == "cuda":  # the backward's workspace cache across layouts, in alternation
        shape = (1, 3000, 2, 8)
        A, x = make_inputs(shape, torch.float32, device, seed=62)
        A64, x64 = A.double().requires_grad_(), x.double().requires_grad_()
        ssm_scan_einsum(A64, x64).square().sum().backward()
        for _ in range(2):
            # 16-byte aligned (4-channel packets), then 4 bytes off (single channels: another
            # plan, a workspace of another size, under the same shapes and strides)
            for off in (0, 1):
                base = torch.empty(x.numel() + off, device=device)
                base[off:].copy_(x.flatten())
                base.requires_grad_()
                Ag = A.clone().requires_grad_()
                ssm_scan(Ag, base[off:].view(shape)).square().sum().backward()
                assert rel_err(base.grad[off:].view(shape), x64.grad) <= 1e-5, off
                assert rel_err(Ag.grad, A64.grad) <= 1e-4, off
        assert len({k[6] for k in _call._ws_bwd}) >= 2  # (both alignments were planned)


FAKE_DRIVER = os.path.join(os.path.dirname(__file__), "..", "build", "fakecuda")


@pytest.mark.skipif(not os.path.exists(os.path.join(FAKE_DRIVER, "libcuda.so.1")),
                    reason="build/fakecuda not built (make test-go builds it)")
def test_cuda_flavour_loads_and_enqueues_over_the_fake_driver():
    """The CUDA flavour (libnanossm.so, never loaded on a machine without a GPU otherwise) under
    the fake driver of tests/fakecuda: the loader picks it, it computes CPU tensors, and a call
    on device memory enqueues one launch (addresses are plain integers to the fake) without
    synchronising, allocating or copying; a device that does not exist is refused by name."""
    p = run_py("""
        import ctypes, torch, nanossm
        from nanossm import _call, _loader
        from nanossm.reference import rel_err, ssm_scan_sequential
        info = nanossm.library_info()
        assert info["flavour"] == "cuda" and info["has_cuda"], info
        A = torch.cumsum(-0.2 * torch.rand(2, 33, 3), 1); x = torch.randn(2, 33, 3, 4)
        assert rel_err(nanossm.ssm_scan(A, x), ssm_scan_sequential(A, x)[0]) <= 1e-5
        fake = ctypes.CDLL("libcuda.so.1")
        fake.fake_set_param_count(b"nanossm_scan_fwd", 26)
        fake.fake_reset()
        L = _loader.lib()
        buf, addr = _call._buffer()
        B, T, R, C = 2, 100, 3, 8
        _call._PLAIN.pack_into(buf, 0, 1 << 20, 0, 3, B, T, R, T * R, R, 1,
                            1 << 24, 0, 4, B, T, R, C, T * R * C, R * C, C, 1,
                            1 << 28, 0, 4, B, T, R, C, T * R * C, R * C, C, 1)
        _call._OPTIONS_PLAIN.pack_into(buf, _call._OFF_OPT, _call._OPT_SIZE, 0)
        _call._tls.plain = False
        st = L.nanossm_scan(addr, addr + 80, addr + 160, addr + 240, 0, None)
        assert st == 0, (st, L.nanossm_last_error())
        assert fake.fake_records() == 1 and fake.fake_violations() == 0, (fake.fake_records(), fake.fake_violations())
        st = L.nanossm_scan(addr, addr + 80, addr + 160, addr + 240, 1, None)
        msg = L.nanossm_last_error().decode()
        assert st == 1 and "cuda:1 does not exist (1 CUDA devices visible)" in msg, (st, msg)
        print("ok")
    """, {"LD_LIBRARY_PATH": os.path.abspath(FAKE_DRIVER), "NANOSSM_FLAVOUR": "auto", "CUDA_VISIBLE_DEVICES": "0"})
    assert p.returncode == 0 and "ok" in p.stdout, p.stdout + p.stderr


def test_workspace_helpers():
    """The workspace sizing and attachment every CUDA call goes through (_call.py), on the CPU:
    one query per layout key, its arguments passed through; the scratch tensor's address and
    size land in the options, and nothing is allocated when nothing is needed."""
    import ctypes
    import struct

    from nanossm import _call

    asked = []

    def query(a, b, n):
        asked.append((a, b))
        ctypes.cast(n, ctypes.POINTER(ctypes.c_int64))[0] = 4096
        return 0
    cache = {}
    assert [_call._workspace_bytes(cache, "k", query, 1, 2) for _ in range(3)] == [4096] * 3
    assert asked == [(1, 2)] and cache == {"k": 4096}
    assert _call._workspace_bytes(cache, "j", query, 3, 4) == 4096 and asked == [(1, 2), (3, 4)]
    buf = ctypes.create_string_buffer(64)
    ws = _call._attach_workspace(buf, 8, 4096, torch.device("cpu"))
    assert ws.numel() == 4096 and struct.unpack_from("<Qq", buf, 8) == (ws.data_ptr(), 4096)
    assert _call._attach_workspace(buf, 8, 0, torch.device("cpu")) is None
