"""The library call: tensors described to the C ABI (zero-copy: pointers, sizes and strides),
packed into one reusable buffer per thread, and the forward and backward launches through
ctypes. ssm_scan (op.py) and the PyTorch ops (autograd.py) call these."""
import ctypes
import struct
import threading

import torch

from . import _loader

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3,
                torch.int32: 4, torch.int64: 5}
_CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_CPU_DTYPES = (torch.float32, torch.float64)


# The call's descriptors (include/nanossm.h) are packed into one reusable per-thread buffer with
# struct.pack_into, the whole argument block in one pack: building ctypes Structures field by
# field costs microseconds, and small calls are dominated by host time. Layout: A, x, out (80
# bytes each), then nanossm_scan_options; a descriptor of n dims is _TENSOR[n] (shape and
# strides zero-padded to 4).
_TENSOR = {3: struct.Struct("<Qii3q8x3q8x"), 4: struct.Struct("<Qii4q4q")}
_OPT_WS = struct.Struct("<Qq")
# sizes and offsets come from the ctypes mirrors of the header's structs (nanossm._loader)
_TSIZE = ctypes.sizeof(_loader.Tensor)
_OPT_SIZE = ctypes.sizeof(_loader.ScanOptions)
_OFF_A, _OFF_X, _OFF_OUT, _OFF_OPT = 0, _TSIZE, 2 * _TSIZE, 3 * _TSIZE
_OFF_WS = _OFF_OPT + _loader.ScanOptions.workspace.offset
_BUF_SIZE = _OFF_OPT + _OPT_SIZE
# the backward's: A, x, out, grad_out, grad_x, grad_A, then nanossm_backward_options
_BOFF_OPT = 6 * _TSIZE
_BOPT_SIZE = ctypes.sizeof(_loader.BackwardOptions)
_BOFF_WS = _BOFF_OPT + _loader.BackwardOptions.workspace.offset
assert all(s.size == _TSIZE for s in _TENSOR.values())
# (the packs below write the options' descriptors one after another from offset 8, then the
# workspace: what the mirrors say)
assert [getattr(_loader.ScanOptions, f).offset for f in ("initial_state", "final_state", "cu_seqlens", "workspace")] \
    == [8 + k * _TSIZE for k in range(4)]
assert [getattr(_loader.BackwardOptions, f).offset for f in
        ("initial_state", "grad_final_state", "grad_initial_state", "cu_seqlens", "workspace")] \
    == [8 + k * _TSIZE for k in range(5)]
_tls = threading.local()


def _buffer(kind="fwd", size=_BUF_SIZE):
    b = getattr(_tls, kind, None)
    if b is None:
        b = ctypes.create_string_buffer(size)
        setattr(_tls, kind, b)
        setattr(_tls, kind + "_addr", ctypes.addressof(b))
    return b, getattr(_tls, kind + "_addr")


# Workspace bytes depend only on the layout (shapes, strides, dtype, 16-byte alignment) and the
# flags: cache them so the common call makes one library call, not two.
_ws_cache = {}


def _raw_stream(index):
    """The current CUDA stream's handle: the private accessor costs ~0.1 us, the public ~5 us."""
    try:
        return torch._C._cuda_getCurrentRawStream(index)
    except AttributeError:  # pragma: no cover - older/newer torch without it
        return torch.cuda.current_stream(index).cuda_stream


def _workspace_bytes(cache, key, query, *args):
    """Bytes of device scratch a call needs, from cache[key] or else asked of the library once per
    layout key: query(*args, c_int64 pointer) (a *_workspace_size call on the packed descriptors;
    the arguments apart, so that the hot path makes no closure)."""
    need = cache.get(key)
    if need is None:
        n = ctypes.c_int64(0)
        _loader.check(query(*args, ctypes.byref(n)))
        need = n.value
        if len(cache) < 4096:
            cache[key] = need
    return need


def _attach_workspace(buf, off, need, device):
    """need bytes from PyTorch's caching allocator on the current stream (safely reused after the
    call: allocations are stream-ordered), written into the options at buf[off]. The tensor must
    live until the call is enqueued."""
    if not need:
        return None
    ws = torch.empty(need, dtype=torch.uint8, device=device)
    _OPT_WS.pack_into(buf, off, ws.data_ptr(), need)
    return ws


# The general call's buffer in one pack: A (3 dims), x and out (4 dims), then the options with
# every optional descriptor in the 4-dim layout (fewer dims: zero-padded; absent: all zero).
_DESC4 = _TENSOR[4].format.lstrip("<")
_CALL = struct.Struct("<" + "".join(_TENSOR[n].format.lstrip("<") for n in (3, 4, 4)) + "II" + _DESC4 * 3 + "Qqq")
assert _CALL.size == _OFF_OPT + _OPT_SIZE
_PAD = tuple((0,) * (4 - n) for n in range(5))
_ABSENT = (0,) * 11


def _desc(t):
    """t's descriptor fields in the 4-dim layout (None: absent)."""
    if t is None:
        return _ABSENT
    shape, pad = t.shape, _PAD[t.dim()]
    return (t.data_ptr(), _DTYPE_CODES[t.dtype], len(shape), *shape, *pad, *t.stride(), *pad)


def _launch(A, x, out, h0, hT, reverse, seq=None, max_len=0):
    """One library call: out (and hT) = scan(A, x). All tensors on one device, already checked;
    max_len: the longest packed sequence if known, else 0 (options.max_seqlen: a plan hint).
    (The whole argument block in one pack: the calls with options are small calls too, e.g.
    ssm_step, and each descriptor packed alone cost ~1 us.)"""
    L = _loader.lib()
    buf, addr = _buffer()
    _tls.plain = False  # the options part now holds this call's (see _launch_plain)
    xd = _DTYPE_CODES[x.dtype]
    shape, strides, xp, op = x.shape, x.stride(), x.data_ptr(), out.data_ptr()
    _CALL.pack_into(buf, 0, A.data_ptr(), _DTYPE_CODES[A.dtype], 3, *A.shape, *A.stride(),
                    xp, xd, 4, *shape, *strides, op, _DTYPE_CODES[out.dtype], 4, *out.shape, *out.stride(),
                    _OPT_SIZE, _loader.SCAN_REVERSE if reverse else 0, *_desc(h0), *_desc(hT), *_desc(seq), 0, 0, max_len)
    pA, px, po, popt = addr + _OFF_A, addr + _OFF_X, addr + _OFF_OUT, addr + _OFF_OPT
    if x.is_cuda:
        dev = x.get_device()
        # (not max_len: the workspace never depends on it, core's TestPlanInvariants)
        key = (shape, strides, out.stride(), xd, xp & 15, op & 15, reverse, seq is not None)
        need = _workspace_bytes(_ws_cache, key, L.nanossm_scan_workspace_size, pA, px, po, popt, dev)
        ws = _attach_workspace(buf, _OFF_WS, need, x.device) if need else None  # noqa: F841 (alive through the call)
        _loader.check(L.nanossm_scan(pA, px, po, popt, dev, _raw_stream(dev)))
    else:
        _loader.check(L.nanossm_scan(pA, px, po, popt, -1, None))


_ws_plain = {}
_OPTIONS_PLAIN = struct.Struct(f"<II{_OPT_SIZE - 8}x")  # struct_size, flags 0, all else zero
# A (3 dims), x and out (4 dims): the three descriptors of a plain call in one pack_into
_PLAIN = struct.Struct("<" + "".join(_TENSOR[n].format.lstrip("<") for n in (3, 4, 4)))
assert _PLAIN.size == 3 * _TSIZE


def _launch_plain(A, x, out):
    """_launch for the plain call (no options; out fresh from torch.empty_like, so contiguous
    and aligned): the options block is written once per thread, not per call, the three
    descriptors in one pack, and the workspace size is cached on x's layout alone. Small calls
    are dominated by this host time (tools/host_profile.py)."""
    L = _loader.lib()
    buf, addr = _buffer()
    if not getattr(_tls, "plain", False):
        _OPTIONS_PLAIN.pack_into(buf, _OFF_OPT, _OPT_SIZE, 0)
        _tls.plain = True
        if not hasattr(_tls, "plain_args"):
            # the four descriptor addresses as ctypes objects, made once per thread: ctypes
            # passes them as they are instead of converting four integers per call (~0.4 us)
            _tls.plain_args = tuple(ctypes.c_void_p(addr + o) for o in (_OFF_A, _OFF_X, _OFF_OUT, _OFF_OPT))
    pA, px, po, popt = _tls.plain_args
    xd = _DTYPE_CODES[x.dtype]
    shape, strides, xp = x.shape, x.stride(), x.data_ptr()
    _PLAIN.pack_into(buf, 0, A.data_ptr(), 0, 3, *A.shape, *A.stride(), xp, xd, 4, *shape, *strides,
                     out.data_ptr(), xd, 4, *shape, *out.stride())
    if not x.is_cuda:
        _loader.check(L.nanossm_scan(pA, px, po, popt, -1, None))
        return
    dev = x.get_device()
    key = (shape, strides, xd, xp & 15, dev)
    need = _workspace_bytes(_ws_plain, key, L.nanossm_scan_workspace_size, pA, px, po, popt, dev)
    if need:  # (x.device costs a device object: only made when a workspace is)
        ws = _attach_workspace(buf, _OFF_WS, need, x.device)  # noqa: F841 (alive through the call)
        _tls.plain = False  # the workspace pointer must not outlive this call in the buffer
    _loader.check(L.nanossm_scan(pA, px, po, popt, dev, _raw_stream(dev)))


def _plain(A, x):
    """The plain call: out = scan(A, x), A float32 and x in a kernel dtype on one device."""
    # empty_like, not torch.empty(shape, dtype=, device=): the same contiguous tensor for a
    # third of the host time (1.6 vs 5 us measured on a CPU host, tools/host_profile.py)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    _launch_plain(A, x, out)
    return out


def _forward(A, x, h0, reverse, want_final, out=None, seq=None, max_len=0):
    """out (and the final state) = scan(A, x); every argument already checked and converted."""
    if (out is None and h0 is None and not reverse and not want_final and seq is None
            and A.dtype is torch.float32 and x.dtype is not torch.float64):
        return _plain(A, x), None
    if out is None:  # (empty_like and new_empty: a third of torch.empty's host time)
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    hT = None
    if want_final:
        hT = x.new_empty(_state_shape(x, seq), dtype=_state_dtype(x))
    _launch(A, x, out, h0, hT, reverse, seq, max_len)
    return out, hT


def _state_shape(x, seq):
    """(B,R,C), or (N,R,C) for N packed sequences."""
    return (x.shape[0] if seq is None else seq.shape[0] - 1, x.shape[2], x.shape[3])


def _state_dtype(x):
    """The dtype of A and of the states: float64 with float64 x (CPU), else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# The backward's buffer in one pack, as _CALL: A, x, out, grad_out, grad_x (4 dims but A's 3),
# grad_A (3 dims), then its options with every optional descriptor in the 4-dim layout.
_BCALL = struct.Struct("<" + "".join(_TENSOR[n].format.lstrip("<") for n in (3, 4, 4, 4, 4, 3)) + "II" + _DESC4 * 4
                       + "Qqq")
assert _BCALL.size == _BOFF_OPT + _BOPT_SIZE
_ws_bwd = {}


def _launch_backward(A, x, out, g, dx, dA, h0, gT, dh0, seq, reverse, max_len=0):
    """One nanossm_scan_backward call; every tensor on one device, already allocated (max_len: as
    _launch's). (One pack for
    the whole argument block, and the workspace size cached by layout, as the forward's.)"""
    L = _loader.lib()
    buf, addr = _buffer("bwd", _BOFF_OPT + _BOPT_SIZE)
    xd = _DTYPE_CODES[x.dtype]
    shape, xs, os_, gs, ds = x.shape, x.stride(), out.stride(), g.stride(), dx.stride()
    ptrs4 = (x.data_ptr(), out.data_ptr(), g.data_ptr(), dx.data_ptr())
    _BCALL.pack_into(buf, 0, A.data_ptr(), _DTYPE_CODES[A.dtype], 3, *A.shape, *A.stride(),
                     ptrs4[0], xd, 4, *shape, *xs, ptrs4[1], _DTYPE_CODES[out.dtype], 4, *out.shape, *os_,
                     ptrs4[2], _DTYPE_CODES[g.dtype], 4, *g.shape, *gs, ptrs4[3], _DTYPE_CODES[dx.dtype], 4,
                     *dx.shape, *ds, dA.data_ptr(), _DTYPE_CODES[dA.dtype], 3, *dA.shape, *dA.stride(),
                     _BOPT_SIZE, _loader.SCAN_REVERSE if reverse else 0,
                     *_desc(h0), *_desc(gT), *_desc(dh0), *_desc(seq), 0, 0, max_len)
    ptrs = [addr + i * _TSIZE for i in range(6)] + [addr + _BOFF_OPT]
    if x.is_cuda:
        dev = x.get_device()
        # (what the plan reads: the shapes, the strides and 16-byte alignment of the four large
        # tensors, which select the packet width, and whether the call is packed)
        key = (shape, xs, os_, gs, ds, xd, tuple(p & 15 for p in ptrs4), reverse, seq is not None)
        need = _workspace_bytes(_ws_bwd, key, L.nanossm_scan_backward_workspace_size, *ptrs, dev)
        ws = _attach_workspace(buf, _BOFF_WS, need, x.device) if need else None  # noqa: F841 (alive through the call)
        _loader.check(L.nanossm_scan_backward(*ptrs, dev, _raw_stream(dev)))
    else:
        _loader.check(L.nanossm_scan_backward(*ptrs, -1, None))
