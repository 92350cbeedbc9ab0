"""ssm_scan's gradients, two ways over the same library calls:

* the PyTorch ops nanossm::scan and nanossm::scan_backward, registered with torch.library (fake
  implementations and autograd), which torch.compile(fullgraph=True) traces, backward included;
* _Scan, a plain autograd.Function for eager calls: the dispatcher of torch.library's custom ops
  costs ~100 us of host time per call and ~300 us per forward + backward (measured on a CPU
  host), more than the scan of a small layer; _Scan costs a few microseconds.

Both run one fused backward call (nanossm_scan_backward): dx, dA and dh0 in a single pass over
x, out and the gradient.
"""
from typing import Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

from ._call import _forward, _launch_backward, _state_dtype, _state_shape


def _empty_state(x):
    """The final-state output of a call that does not return it (ops need a tensor)."""
    return x.new_empty(0, dtype=_state_dtype(x))


@torch.library.custom_op("nanossm::scan", mutates_args=())
def _scan_op(A: torch.Tensor, x: torch.Tensor, h0: Optional[torch.Tensor], reverse: bool,
             want_final: bool, cu_seqlens: Optional[torch.Tensor] = None,
             max_seqlen: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    out, hT = _forward(A, x, h0, reverse, want_final, seq=cu_seqlens, max_len=max_seqlen)
    return out, (hT if hT is not None else _empty_state(x))


@_scan_op.register_fake
def _scan_fake(A, x, h0, reverse, want_final, cu_seqlens=None, max_seqlen=0):
    hT = x.new_empty(_state_shape(x, cu_seqlens) if want_final else (0,), dtype=_state_dtype(x))
    return torch.empty(x.shape, dtype=x.dtype, device=x.device), hT


def _backward_impl(A: torch.Tensor, x: torch.Tensor, out: torch.Tensor, g: torch.Tensor,
                   g_final: Optional[torch.Tensor], h0: Optional[torch.Tensor], reverse: bool,
                   cu_seqlens: Optional[torch.Tensor] = None,
                   max_seqlen: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    dA = torch.empty(A.shape, dtype=A.dtype, device=A.device)
    dh0 = torch.empty(_state_shape(x, cu_seqlens), dtype=_state_dtype(x), device=x.device) if h0 is not None else None
    if g_final is not None:
        g_final = g_final.to(_state_dtype(x)).contiguous()
    _launch_backward(A, x, out, g.to(x.dtype), dx, dA, h0, g_final, dh0, cu_seqlens, reverse, max_seqlen)
    return dx, dA, (dh0 if dh0 is not None else _empty_state(x))


_scan_backward_op = torch.library.custom_op("nanossm::scan_backward", mutates_args=())(_backward_impl)


@_scan_backward_op.register_fake
def _scan_backward_fake(A, x, out, g, g_final, h0, reverse, cu_seqlens=None, max_seqlen=0):
    dh0 = x.new_empty(_state_shape(x, cu_seqlens) if h0 is not None else (0,), dtype=_state_dtype(x))
    return torch.empty(x.shape, dtype=x.dtype, device=x.device), torch.empty_like(A), dh0


def _scan_setup(ctx, inputs, output):
    A, x, h0, reverse, want_final, seq, max_len = inputs  # (the op's and _ScanFunc's defaults bound)
    ctx.save_for_backward(A, x, output[0], h0, seq)
    ctx.reverse, ctx.want_final, ctx.max_len = reverse, want_final, max_len


def _gradients(ctx, g, g_final, backward):
    """(dA, dx, dh0, None, None, None, None) of a scan saved by _scan_setup, through `backward` (the
    op nanossm::scan_backward, or _backward_impl itself). The final state's gradient joins g at
    the last step."""
    A, x, out, h0, seq = ctx.saved_tensors
    if g is None:
        g = torch.zeros_like(out)
    gT = g_final if ctx.want_final and g_final is not None and g_final.numel() > 0 else None
    if g.stride(-1) != 1:
        # e.g. the expanded gradient of a sum: one copy buys the 16-byte vector path, which is
        # ~2.5x faster than the per-channel one on the GPU
        g = g.contiguous()
    dx, dA, dh0 = backward(A, x, out, g, gT, h0, ctx.reverse, seq, ctx.max_len)
    # (one per input; _Scan.apply given six takes the trailing None as PyTorch allows)
    return dA, dx, (dh0 if h0 is not None else None), None, None, None, None


def _op_backward(ctx, g, g_final):
    return _gradients(ctx, g, g_final, torch.ops.nanossm.scan_backward)


_scan_op.register_autograd(_op_backward, setup_context=_scan_setup)


class _Scan(torch.autograd.Function):
    """nanossm::scan's forward and backward without the custom-op dispatcher, for eager calls
    (ssm_scan; torch.compile traces the op instead). Arguments as nanossm::scan's, all seven."""

    @staticmethod
    def forward(ctx, A, x, h0, reverse, want_final, seq, max_len=0):
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zeros made
        out, hT = _forward(A, x, h0, reverse, want_final, seq=seq, max_len=max_len)
        hT = hT if hT is not None else _empty_state(x)
        _scan_setup(ctx, (A, x, h0, reverse, want_final, seq, max_len), (out, hT))
        return out, hT

    @staticmethod
    @once_differentiable
    def backward(ctx, g, g_final):
        return _gradients(ctx, g, g_final, _backward_impl)


class _ScanFunc(torch.autograd.Function):
    """_Scan for torch.func transforms (grad, jacrev, ...), which need the forward/setup_context
    form; PyTorch binds the arguments of that form with inspect on every call (~50 us), so eager
    calls keep _Scan. The backward goes through the op, whose dispatcher unwraps functorch's
    tensors (they have no storage to hand the library)."""

    @staticmethod
    def forward(A, x, h0, reverse, want_final, seq, max_len=0):
        out, hT = _forward(A, x, h0, reverse, want_final, seq=seq, max_len=max_len)
        return out, (hT if hT is not None else _empty_state(x))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.set_materialize_grads(False)
        _scan_setup(ctx, inputs, output)

    @staticmethod
    @once_differentiable
    def backward(ctx, g, g_final):
        return _gradients(ctx, g, g_final, torch.ops.nanossm.scan_backward)


def scan_function(*tensors):
    """The autograd.Function for a call on these tensors: _ScanFunc under torch.func, else _Scan."""
    check = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    if check is not None and any(t is not None and check(t) for t in tensors):
        return _ScanFunc
    return _Scan


def refuse_vmap(*tensors):
    """A clear error for tensors batched by torch.func.vmap: the library reads storage, which
    they have none of (a batch of scans is one scan with a larger B)."""
    check = getattr(torch._C._functorch, "is_batchedtensor", None)
    if check is not None and any(t is not None and check(t) for t in tensors):
        raise NotImplementedError("ssm_scan: torch.func.vmap is not supported; stack the batch into B instead")

