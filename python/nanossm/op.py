"""ssm_scan: the PyTorch entry point (ctypes over the C ABI, zero-copy on tensor pointers)."""
import operator

import torch

from ._call import _CPU_DTYPES, _CUDA_DTYPES, _forward, _plain
from .autograd import refuse_vmap, scan_function

def _check_tensor(name, t, ndim, dims):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dims {dims}, got {t.dim()}")


def _plain_ok(cumsum_A, x):
    """True when (A, x) can take the plain call as they are: plain tensors, A float32 (B,T,R),
    x (B,T,R,C) in a kernel dtype, one device, no empty dim, not under torch.compile. Every
    check is a cheap attribute read (tools/host_profile.py times this on its own)."""
    return (type(x) is torch.Tensor and type(cumsum_A) is torch.Tensor and cumsum_A.dtype is torch.float32
            and x.dim() == 4 and cumsum_A.dim() == 3
            and (x.dtype in _CUDA_DTYPES if x.is_cuda else x.dtype is torch.float32 and x.is_cpu)
            and cumsum_A.is_cuda == x.is_cuda and cumsum_A.get_device() == x.get_device()
            and x.numel() > 0 and cumsum_A.numel() > 0 and not torch.compiler.is_compiling())


def _options_ok(x, h0, seq):
    """True when the options of a call whose (A, x) passed _plain_ok need no conversion: h0
    absent or a contiguous float32 (B,R,C)-dimmed tensor, cu_seqlens absent or an int32/int64
    vector, both on x's device (the library checks their shapes and values)."""
    return ((h0 is None or (type(h0) is torch.Tensor and h0.dtype is torch.float32 and h0.dim() == 3
                            and h0.is_cuda == x.is_cuda and h0.get_device() == x.get_device()
                            and h0.is_contiguous()))
            and (seq is None or (type(seq) is torch.Tensor and seq.dtype in _SEQ_DTYPES and seq.dim() == 1
                                 and seq.is_cuda == x.is_cuda and seq.get_device() == x.get_device())))


_SEQ_DTYPES = (torch.int32, torch.int64)


def ssm_scan(cumsum_A, x, use_assoc_scan=False, *, initial_state=None, return_final_state=False,
             reverse=False, cu_seqlens=None, max_seqlen=None, out=None):
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
    out-of-bounds accesses. A packed CUDA call with states needs R*C < 2^31.
    max_seqlen: with cu_seqlens, the longest sequence's length if you know it (an int >= 0; as
    flash-attn's varlen functions take it). A hint for the launch plan only: any value gives
    results equally accurate (the bits may differ, as the plan does). GPU offsets cannot be read
    without a sync, so the plan otherwise assumes sequences of similar length; a pack whose one
    sequence holds most of the tokens runs 2.5x faster forward, 3.3x backward with it (H200).
    Offsets given on the CPU give it exactly (the hint is then ignored). Under torch.compile a
    changing value does not recompile.
    out: optional preallocated (B,T,R,C) output (no autograd through it).
    Differentiable in A, x and initial_state.
    """
    del use_assoc_scan
    # (no call on the hot path when absent)
    max_len = 0 if max_seqlen is None else _checked_max_seqlen(max_seqlen, cu_seqlens)
    # Fast paths: inputs already in the kernel's dtypes, eager (_plain_ok), and options (if any)
    # already as the library takes them (_options_ok). The plain call (no options) has its own;
    # anything unusual takes the general path below, which explains itself. With gradients they go
    # straight to _Scan (autograd.py), whose forward is this call.
    if out is None and _plain_ok(cumsum_A, x):
        h0, seq = initial_state, cu_seqlens
        plain = h0 is None and seq is None and not return_final_state and not reverse
        if plain or _options_ok(x, h0, seq):
            if ((x.requires_grad or cumsum_A.requires_grad or (h0 is not None and h0.requires_grad))
                    and torch.is_grad_enabled()):
                y, hT = scan_function(cumsum_A, x, h0).apply(cumsum_A, x, h0, reverse, return_final_state, seq,
                                                             max_len)
            else:
                try:
                    if plain:
                        return _plain(cumsum_A, x)
                    y, hT = _forward(cumsum_A, x, h0, reverse, return_final_state, seq=seq, max_len=max_len)
                except RuntimeError:
                    refuse_vmap(cumsum_A, x, h0)  # (vmap's tensors fail in the call: say why)
                    raise
            return (y, hT) if return_final_state else y
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
            cu_seqlens = _checked_seqlens(cu_seqlens, x)
            if cu_seqlens.numel() > 1:  # (host values: the longest, exactly, at no cost)
                max_len = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
            cu_seqlens = cu_seqlens.to(x.device)
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

    refuse_vmap(cumsum_A, x, initial_state)
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
        y, hT = _forward(A, xc, h0, reverse, return_final_state, out=out, seq=cu_seqlens, max_len=max_len)
    elif torch.compiler.is_compiling():  # traced: the registered op (autograd.py)
        y, hT = torch.ops.nanossm.scan(A, xc, h0, reverse, return_final_state, cu_seqlens, max_len)
    elif needs_grad:  # eager: the same calls without the custom-op dispatcher
        y, hT = scan_function(A, xc, h0).apply(A, xc, h0, reverse, return_final_state, cu_seqlens, max_len)
    else:
        y, hT = _forward(A, xc, h0, reverse, return_final_state, seq=cu_seqlens, max_len=max_len)
    if y.dtype != x.dtype:
        y = y.to(x.dtype)
    return (y, hT) if return_final_state else y


def _checked_max_seqlen(max_seqlen, cu_seqlens):
    """max_seqlen as the library takes it: an int >= 0 (0: unknown), only with cu_seqlens."""
    if max_seqlen is None:
        return 0
    if torch.compiler.is_compiling():
        # (traced, it may be a symbolic int: the op takes it as it is and the library checks it;
        # reading its value here would specialise the graph on it, one recompile per length)
        return max_seqlen
    try:  # (Python's and numpy's ints; not bools, nor tensors: a device tensor's value would sync)
        if isinstance(max_seqlen, (bool, torch.Tensor)):
            raise TypeError
        max_seqlen = operator.index(max_seqlen)
    except TypeError:
        raise TypeError(f"max_seqlen: expected an int, got {type(max_seqlen).__name__}") from None
    if not 0 <= max_seqlen < 1 << 63:
        raise ValueError(f"max_seqlen: expected >= 0 (0: unknown) and < 2^63, got {max_seqlen}")
    if cu_seqlens is None and max_seqlen:
        raise ValueError(f"max_seqlen: given ({max_seqlen}) without cu_seqlens")
    return max_seqlen


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

