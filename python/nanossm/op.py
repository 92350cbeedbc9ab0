"""ssm_scan: the PyTorch entry point (ctypes over the C ABI, zero-copy on tensor pointers)."""
import ctypes
import struct
import threading
from typing import Optional, Tuple

import torch

from . import _loader

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3,
                torch.int32: 4, torch.int64: 5}
_CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_CPU_DTYPES = (torch.float32, torch.float64)


# The call's descriptors (include/nanossm.h) are packed into one reusable per-thread buffer with
# struct.pack_into: building ctypes Structures field by field costs microseconds, and small calls
# are dominated by host time. Layout: A, x, out (80 bytes each), then nanossm_scan_options.
_TENSOR = {1: struct.Struct("<Qiiq24xq24x"), 3: struct.Struct("<Qii3q8x3q8x"), 4: struct.Struct("<Qii4q4q")}
_OPT_HEAD = struct.Struct("<II")
_OPT_WS = struct.Struct("<Qq")
# sizes and offsets come from the ctypes mirrors of the header's structs (nanossm._loader)
_TSIZE = ctypes.sizeof(_loader.Tensor)
_OPT_SIZE = ctypes.sizeof(_loader.ScanOptions)
_OFF_A, _OFF_X, _OFF_OUT, _OFF_OPT = 0, _TSIZE, 2 * _TSIZE, 3 * _TSIZE
_OFF_H0, _OFF_HT, _OFF_SEQ, _OFF_WS = (_OFF_OPT + getattr(_loader.ScanOptions, f).offset for f in
                                       ("initial_state", "final_state", "cu_seqlens", "workspace"))
_BUF_SIZE = _OFF_OPT + _OPT_SIZE
# the backward's: A, x, out, grad_out, grad_x, grad_A, then nanossm_backward_options
_BOFF_OPT = 6 * _TSIZE
_BOPT_SIZE = ctypes.sizeof(_loader.BackwardOptions)
_BOFF_H0, _BOFF_GT, _BOFF_DH0, _BOFF_SEQ, _BOFF_WS = (
    _BOFF_OPT + getattr(_loader.BackwardOptions, f).offset
    for f in ("initial_state", "grad_final_state", "grad_initial_state", "cu_seqlens", "workspace"))
assert all(s.size == _TSIZE for s in _TENSOR.values())
_ZERO_T = bytes(_TSIZE)
_tls = threading.local()


def _buffer(kind="fwd", size=_BUF_SIZE):
    b = getattr(_tls, kind, None)
    if b is None:
        b = ctypes.create_string_buffer(size)
        setattr(_tls, kind, b)
        setattr(_tls, kind + "_addr", ctypes.addressof(b))
    return b, getattr(_tls, kind + "_addr")


def _pack(buf, off, t):
    """Describe t (no copy) at buf[off:off+80]; None -> an absent tensor."""
    if t is None:
        buf[off:off + _TSIZE] = _ZERO_T
    else:
        _TENSOR[t.dim()].pack_into(buf, off, t.data_ptr(), _DTYPE_CODES[t.dtype], t.dim(), *t.shape, *t.stride())


# Workspace bytes depend only on the layout (shapes, strides, dtype, 16-byte alignment) and the
# flags: cache them so the common call makes one library call, not two.
_ws_cache = {}


def _raw_stream(index):
    """The current CUDA stream's handle: the private accessor costs ~0.1 us, the public ~5 us."""
    try:
        return torch._C._cuda_getCurrentRawStream(index)
    except AttributeError:  # pragma: no cover - older/newer torch without it
        return torch.cuda.current_stream(index).cuda_stream


def _launch(A, x, out, h0, hT, reverse, seq=None):
    """One library call: out (and hT) = scan(A, x). All tensors on one device, already checked."""
    L = _loader.lib()
    buf, addr = _buffer()
    _tls.plain = False  # the options part now holds this call's (see _launch_plain)
    _pack(buf, _OFF_A, A)
    _pack(buf, _OFF_X, x)
    _pack(buf, _OFF_OUT, out)
    _OPT_HEAD.pack_into(buf, _OFF_OPT, _OPT_SIZE, _loader.SCAN_REVERSE if reverse else 0)
    _pack(buf, _OFF_H0, h0)
    _pack(buf, _OFF_HT, hT)
    _pack(buf, _OFF_SEQ, seq)
    _OPT_WS.pack_into(buf, _OFF_WS, 0, 0)
    pA, px, po, popt = addr + _OFF_A, addr + _OFF_X, addr + _OFF_OUT, addr + _OFF_OPT
    if x.is_cuda:
        dev = x.device.index
        key = (x.shape, x.stride(), out.stride(), x.dtype, x.data_ptr() % 16, out.data_ptr() % 16, reverse,
               seq is not None)
        need = _ws_cache.get(key)
        if need is None:
            n = ctypes.c_int64(0)
            _loader.check(L.nanossm_scan_workspace_size(pA, px, po, popt, dev, ctypes.byref(n)))
            need = _ws_cache.setdefault(key, n.value) if len(_ws_cache) < 4096 else n.value
        ws = None
        if need:
            # from PyTorch's caching allocator on the current stream: reused safely after the call
            ws = torch.empty(need, dtype=torch.uint8, device=x.device)
            _OPT_WS.pack_into(buf, _OFF_WS, ws.data_ptr(), need)
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
    need = _ws_plain.get(key)
    if need is None:
        n = ctypes.c_int64(0)
        _loader.check(L.nanossm_scan_workspace_size(pA, px, po, popt, dev, ctypes.byref(n)))
        need = _ws_plain.setdefault(key, n.value) if len(_ws_plain) < 4096 else n.value
    if need:
        ws = torch.empty(need, dtype=torch.uint8, device=x.device)
        _OPT_WS.pack_into(buf, _OFF_WS, ws.data_ptr(), need)
        _tls.plain = False  # the workspace pointer must not outlive this call in the buffer
    _loader.check(L.nanossm_scan(pA, px, po, popt, dev, _raw_stream(dev)))


def _forward(A, x, h0, reverse, want_final, out=None, seq=None):
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    hT = None
    if want_final:
        hT = torch.empty(_state_shape(x, seq), dtype=_state_dtype(x), device=x.device)
    _launch(A, x, out, h0, hT, reverse, seq)
    return out, hT


def _state_shape(x, seq):
    """(B,R,C), or (N,R,C) for N packed sequences."""
    return (x.shape[0] if seq is None else seq.shape[0] - 1, x.shape[2], x.shape[3])


# ---- the PyTorch op: nanossm::scan, with a fake (meta) implementation and autograd, so that
# torch.compile(fullgraph=True) traces through it and the backward is compiled too. Plain
# inference calls skip the custom-op dispatcher (it costs more than the whole library call).

@torch.library.custom_op("nanossm::scan", mutates_args=())
def _scan_op(A: torch.Tensor, x: torch.Tensor, h0: Optional[torch.Tensor], reverse: bool,
             want_final: bool, cu_seqlens: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    out, hT = _forward(A, x, h0, reverse, want_final, seq=cu_seqlens)
    return out, (hT if hT is not None else x.new_empty(0, dtype=_state_dtype(x)))


@_scan_op.register_fake
def _scan_fake(A, x, h0, reverse, want_final, cu_seqlens=None):
    hT = x.new_empty(_state_shape(x, cu_seqlens) if want_final else (0,), dtype=_state_dtype(x))
    return torch.empty(x.shape, dtype=x.dtype, device=x.device), hT


def _state_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _scan_setup(ctx, inputs, output):
    A, x, h0, reverse, want_final, seq = inputs
    ctx.save_for_backward(A, x, output[0], h0, seq)
    ctx.reverse, ctx.want_final = reverse, want_final


def _scan_backward(ctx, g, g_final):
    """One fused library call (nanossm_scan_backward): dx, dA and dh0 in a single pass over x,
    out and g. The final state's gradient joins g at the last step."""
    A, x, out, h0, seq = ctx.saved_tensors
    if g is None:
        g = torch.zeros_like(out)
    gT = g_final if ctx.want_final and g_final is not None and g_final.numel() > 0 else None
    if g.stride(-1) != 1:
        # e.g. the expanded gradient of a sum: one copy buys the 16-byte vector path, which is
        # ~2.5x faster than the per-channel one on the GPU
        g = g.contiguous()
    dx, dA, dh0 = torch.ops.nanossm.scan_backward(A, x, out, g, gT, h0, ctx.reverse, seq)
    return dA, dx, (dh0 if h0 is not None else None), None, None, None


@torch.library.custom_op("nanossm::scan_backward", mutates_args=())
def _scan_backward_op(A: torch.Tensor, x: torch.Tensor, out: torch.Tensor, g: torch.Tensor,
                      g_final: Optional[torch.Tensor], h0: Optional[torch.Tensor], reverse: bool,
                      cu_seqlens: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    dA = torch.empty(A.shape, dtype=A.dtype, device=A.device)
    dh0 = torch.empty(_state_shape(x, cu_seqlens), dtype=_state_dtype(x), device=x.device) if h0 is not None else None
    if g_final is not None:
        g_final = g_final.to(_state_dtype(x)).contiguous()
    _launch_backward(A, x, out, g.to(x.dtype), dx, dA, h0, g_final, dh0, cu_seqlens, reverse)
    return dx, dA, (dh0 if dh0 is not None else x.new_empty(0, dtype=_state_dtype(x)))


@_scan_backward_op.register_fake
def _scan_backward_fake(A, x, out, g, g_final, h0, reverse, cu_seqlens=None):
    dh0 = x.new_empty(_state_shape(x, cu_seqlens) if h0 is not None else (0,), dtype=_state_dtype(x))
    return torch.empty(x.shape, dtype=x.dtype, device=x.device), torch.empty_like(A), dh0


def _launch_backward(A, x, out, g, dx, dA, h0, gT, dh0, seq, reverse):
    """One nanossm_scan_backward call; every tensor on one device, already allocated."""
    L = _loader.lib()
    buf, addr = _buffer("bwd", _BOFF_OPT + _BOPT_SIZE)
    for i, t in enumerate((A, x, out, g, dx, dA)):
        _pack(buf, i * _TSIZE, t)
    _OPT_HEAD.pack_into(buf, _BOFF_OPT, _BOPT_SIZE, _loader.SCAN_REVERSE if reverse else 0)
    for off, t in ((_BOFF_H0, h0), (_BOFF_GT, gT), (_BOFF_DH0, dh0), (_BOFF_SEQ, seq)):
        _pack(buf, off, t)
    _OPT_WS.pack_into(buf, _BOFF_WS, 0, 0)
    ptrs = [addr + i * _TSIZE for i in range(6)] + [addr + _BOFF_OPT]
    if x.is_cuda:
        dev = x.device.index
        n = ctypes.c_int64(0)
        _loader.check(L.nanossm_scan_backward_workspace_size(*ptrs, dev, ctypes.byref(n)))
        ws = None
        if n.value:
            ws = torch.empty(n.value, dtype=torch.uint8, device=x.device)
            _OPT_WS.pack_into(buf, _BOFF_WS, ws.data_ptr(), n.value)
        _loader.check(L.nanossm_scan_backward(*ptrs, dev, _raw_stream(dev)))
    else:
        _loader.check(L.nanossm_scan_backward(*ptrs, -1, None))


_scan_op.register_autograd(_scan_backward, setup_context=_scan_setup)


def _check_tensor(name, t, ndim, dims):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dims {dims}, got {t.dim()}")


def ssm_scan(cumsum_A, x, use_assoc_scan=False, *, initial_state=None, return_final_state=False,
             reverse=False, cu_seqlens=None, out=None):
    """out[b,t,r,c] = sum_{j<=t} exp(A[b,t,r] - A[b,j,r]) * x[b,j,r,c], in O(T).

    cumsum_A: (B,T,R) cumulative log-decay (computed in float32; float64 with float64 x on CPU).
    x: (B,T,R,C) float32 / float16 / bfloat16 on CUDA, float32 / float64 on CPU (float16 and
    bfloat16 CPU tensors are computed in float32). Strided views are read in place.
    use_assoc_scan: accepted for compatibility with ssm_scan_triton; nanossm is always O(T).
    initial_state: (B,R,C) state before step 0 (decays by exp(A[t]) into out[t]).
    return_final_state: also return the state after the last step, (B,R,C) float32.
    reverse: out[t] = sum_{j>=t} exp(A[j] - A[t]) * x[j].
    cu_seqlens: (N+1,) int32/int64 offsets of N packed sequences in x with B = 1: the scan
    restarts at each start; initial/final states are then (N,R,C), sequence k's initial state
    decays by exp(A[t] - A[s_k - 1]); empty sequences are allowed. Values given on the CPU are
    checked, then copied to the GPU (a small copy that waits for the stream: pass the offsets on
    the GPU in a training loop or under CUDA-graph capture); values already on the GPU are not
    checked (that would synchronise the host): malformed ones give wrong results, never
    out-of-bounds accesses.
    out: optional preallocated (B,T,R,C) output (no autograd through it).
    Differentiable in A, x and initial_state.
    """
    del use_assoc_scan
    # Fast path: the plain inference call with inputs already in the kernel's dtypes. Every check
    # here is cheap; anything unusual takes the general path below, which explains itself.
    if (out is None and initial_state is None and cu_seqlens is None and not return_final_state
            and not reverse and type(x) is torch.Tensor and type(cumsum_A) is torch.Tensor
            and cumsum_A.dtype is torch.float32 and x.dim() == 4 and cumsum_A.dim() == 3
            and (x.dtype in _CUDA_DTYPES if x.is_cuda else x.dtype is torch.float32 and x.is_cpu)
            and cumsum_A.is_cuda == x.is_cuda and cumsum_A.get_device() == x.get_device()
            and x.numel() > 0 and cumsum_A.numel() > 0
            and not (torch.is_grad_enabled() and (x.requires_grad or cumsum_A.requires_grad))
            and not torch.compiler.is_compiling()):
        # empty_like, not torch.empty(shape, dtype=, device=): the same contiguous tensor for
        # a third of the host time (1.6 vs 5 us measured on a CPU host, tools/host_profile.py)
        y = torch.empty_like(x, memory_format=torch.contiguous_format)
        _launch_plain(cumsum_A, x, y)
        return y
    _check_tensor("cumsum_A", cumsum_A, 3, "(B,T,R)")
    _check_tensor("x", x, 4, "(B,T,R,C)")
    if cu_seqlens is not None:
        if not isinstance(cu_seqlens, torch.Tensor):
            raise TypeError(f"cu_seqlens: expected a torch.Tensor, got {type(cu_seqlens).__name__}")
        if cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"cu_seqlens: expected int32 or int64, got {cu_seqlens.dtype}")
        if cu_seqlens.dim() != 1:
            raise ValueError(f"cu_seqlens: expected 1 dim (N+1,), got {cu_seqlens.dim()}")
        if x.is_cuda and not cu_seqlens.is_cuda:
            cu_seqlens = _checked_seqlens(cu_seqlens, x).to(x.device)
        elif cu_seqlens.device != x.device:
            raise ValueError(f"cu_seqlens: on {cu_seqlens.device} but x is on {x.device}")
    if x.device.type not in ("cpu", "cuda"):
        # (anything else would hand the CPU backend addresses it cannot read)
        raise ValueError(f"x: expected a CPU or CUDA tensor, got one on {x.device}")
    if cumsum_A.device != x.device:
        raise ValueError(f"cumsum_A: on {cumsum_A.device} but x is on {x.device}")
    if not (x.is_floating_point() and cumsum_A.is_floating_point()):
        bad, t = ("x", x) if not x.is_floating_point() else ("cumsum_A", cumsum_A)
        raise TypeError(f"{bad}: expected a floating dtype, got {t.dtype}")
    if x.is_cuda and x.dtype not in _CUDA_DTYPES:
        raise TypeError(f"x: expected float32, float16 or bfloat16 on CUDA, got {x.dtype}")
    h0 = initial_state
    if h0 is not None:
        _check_tensor("initial_state", h0, 3, "(B,R,C)")
        if h0.device != x.device:
            raise ValueError(f"initial_state: on {h0.device} but x is on {x.device}")
    if x.numel() == 0 or cumsum_A.numel() == 0:
        raise ValueError(f"x: every size must be >= 1, got {tuple(x.shape)} and cumsum_A {tuple(cumsum_A.shape)}")

    compute = x.dtype if (x.is_cuda or x.dtype in _CPU_DTYPES) else torch.float32
    a_dtype = torch.float64 if compute == torch.float64 else torch.float32  # A and the states
    A = cumsum_A if cumsum_A.dtype == a_dtype else cumsum_A.to(a_dtype)
    xc = x if x.dtype == compute else x.to(compute)
    if h0 is not None:
        h0 = h0.to(a_dtype).contiguous()

    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (cumsum_A, x, initial_state))
    if out is not None:
        if needs_grad or torch.compiler.is_compiling():
            raise ValueError("out: not supported when gradients are required or under torch.compile")
        if compute != x.dtype:
            raise ValueError(f"out: not supported for {x.dtype} on the CPU")
        _check_tensor("out", out, 4, "(B,T,R,C)")
        y, hT = _forward(A, xc, h0, reverse, return_final_state, out=out, seq=cu_seqlens)
    elif needs_grad or torch.compiler.is_compiling():
        y, hT = torch.ops.nanossm.scan(A, xc, h0, reverse, return_final_state, cu_seqlens)
    else:
        y, hT = _forward(A, xc, h0, reverse, return_final_state, seq=cu_seqlens)
    if y.dtype != x.dtype:
        y = y.to(x.dtype)
    return (y, hT) if return_final_state else y


def _checked_seqlens(cu, x):
    """Host cu_seqlens for a CUDA call: checked here, where reading them costs no sync."""
    T = x.shape[1]
    if cu.numel() < 1 or int(cu[0]) != 0 or int(cu[-1]) != T:
        raise ValueError(f"cu_seqlens: must start at 0 and end at T = {T}, got {cu.tolist()[:1]} ... {cu.tolist()[-1:]}")
    if cu.numel() > 1 and bool((cu[1:] < cu[:-1]).any()):
        raise ValueError("cu_seqlens: must be non-decreasing")
    return cu


def ssm_step(state, log_a, x, *, inplace=False):
    """One decode step: state <- exp(log_a) * state + x, for state and x (B,R,C), log_a (B,R).

    It is the scan of one step with `state` as its initial state, through the same kernel, so it
    equals the last step of a full scan. Returns the new state (float32; float64 with float64 x
    on the CPU); inplace=True also writes it into `state` and returns `state`.
    """
    _check_tensor("state", state, 3, "(B,R,C)")
    _check_tensor("log_a", log_a, 2, "(B,R)")
    _check_tensor("x", x, 3, "(B,R,C)")
    _, new = ssm_scan(log_a.unsqueeze(1), x.unsqueeze(1), initial_state=state, return_final_state=True)
    if inplace:
        with torch.no_grad():
            state.copy_(new)
        return state
    return new
