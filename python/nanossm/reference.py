"""Reference implementations: the original naive einsum baseline and a float64 sequential scan."""
import torch


def ssm_scan_einsum(cumsum_A, x):
    """The original project's baseline: build the (B,T,T,R) decay matrix, mask it causally, einsum.

    L[b,t,j,r] = exp(A[b,t,r] - A[b,j,r]) for j <= t, else 0;  out = einsum('btjr,bjrc->btrc').
    O(T^2) memory and work: for parity tests and benchmarks on small T only.
    """
    T = cumsum_A.shape[1]
    diff = cumsum_A[:, :, None, :] - cumsum_A[:, None, :, :]  # (B, t, j, R)
    causal = torch.ones(T, T, dtype=torch.bool, device=cumsum_A.device).tril()
    L = torch.exp(diff.masked_fill(~causal[None, :, :, None], float("-inf")))
    return torch.einsum("btjr,bjrc->btrc", L.to(x.dtype), x)


def ssm_scan_sequential(cumsum_A, x, initial_state=None, reverse=False):
    """The recurrence h[t] = exp(A[t] - A[t-1]) h[t-1] + x[t] in float64, one step at a time.

    Returns (out, final_state) in float64. A[-1] := 0, so an initial state decays by exp(A[t]).
    reverse: h[t] = exp(A[t+1] - A[t]) h[t+1] + x[t] from t = T-1 down (no initial state).
    """
    A = cumsum_A.double()
    xd = x.double()
    B, T, R, C = x.shape
    out = torch.empty_like(xd)
    if reverse:
        if initial_state is not None:
            raise ValueError("initial_state: not defined for reverse scans")
        h = torch.zeros(B, R, C, dtype=torch.float64, device=x.device)
        for t in range(T - 1, -1, -1):
            d = torch.exp(A[:, t + 1] - A[:, t]) if t + 1 < T else torch.zeros_like(A[:, t])
            h = d.unsqueeze(-1) * h + xd[:, t]
            out[:, t] = h
        return out, h
    h = torch.zeros(B, R, C, dtype=torch.float64, device=x.device)
    if initial_state is not None:
        h = initial_state.double().clone()
    prev = torch.zeros_like(A[:, 0])
    for t in range(T):
        h = torch.exp(A[:, t] - prev).unsqueeze(-1) * h + xd[:, t]
        prev = A[:, t]
        out[:, t] = h
    return out, h


def rel_err(out, ref):
    """||out - ref|| / ||ref|| in float64 (inf if out has NaN/inf where ref has none)."""
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all() and torch.isfinite(ref).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def ssm_scan_chunked64(cumsum_A, x, chunk=64):
    """The same op in float64 on x's device, fast enough for long T: exact (masked) decay
    matrices inside chunks of `chunk` steps, carries passed sequentially between chunks.
    An independent check for shapes where the step-by-step loop is too slow."""
    A, xd = cumsum_A.double(), x.double()
    B, T, R, C = x.shape
    out = torch.empty_like(xd)
    h = torch.zeros(B, R, C, dtype=torch.float64, device=x.device)
    prev = torch.zeros(B, R, dtype=torch.float64, device=x.device)
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=x.device).tril()
    for s in range(0, T, chunk):
        a, xc = A[:, s:s + chunk], xd[:, s:s + chunk]
        n = a.shape[1]
        diff = a[:, :, None, :] - a[:, None, :, :]
        L = torch.exp(diff.masked_fill(~causal[:n, :n, None], float("-inf")))
        o = torch.einsum("btjr,bjrc->btrc", L, xc)
        if s > 0:  # (before the first chunk h is 0; exp(a - 0) may overflow there: inf * 0)
            o += torch.exp(a - prev[:, None]).unsqueeze(-1) * h[:, None]
        out[:, s:s + n] = o
        h, prev = o[:, -1], a[:, -1]
    return out


def ssm_scan_backward64(cumsum_A, x, grad_out, chunk=64):
    """The plain op's gradients in float64 from SPEC's backward, for long T (ssm_scan_chunked64 at
    its core): dx is the reverse scan of grad_out, dx[t] = sum_{j>=t} exp(A[j] - A[t]) g[j], and
    dA[t] = sum_c (g[t] * out[t] - x[t] * dx[t]). Returns (dx, dA, out), float64 on x's device."""
    out = ssm_scan_chunked64(cumsum_A, x, chunk)
    dx = ssm_scan_chunked64(-cumsum_A.flip(1), grad_out.flip(1), chunk).flip(1)
    dA = (grad_out.double() * out - x.double() * dx).sum(-1)
    return dx, dA, out
