"""nanossm.nn.SSM: the SSM layer of the original project on top of the scan.

    log_a = -softplus(W_a u)                     (B,T,R)   per-head log-decay, <= 0
    x     = (W_v u)[..., :, None] * (W_k u)[..., None, :]   (B,T,R,C) outer product of two projections
    h     = scan(cumsum(log_a), x)               (B,T,R,C) the state
    y     = W_o (h . (W_q u))                    read the state out with a query, project back

impl="nanossm" runs the scan with nanossm.ssm_scan; impl="naive" with the original einsum
baseline (O(T^2) memory); both give the same outputs and gradients.
"""
import torch
from torch import nn

from .op import ssm_scan
from .reference import ssm_scan_einsum


class SSM(nn.Module):
    def __init__(self, d_model, n_heads=4, d_state=16, impl="nanossm"):
        super().__init__()
        if impl not in ("nanossm", "naive"):
            raise ValueError(f"impl: expected 'nanossm' or 'naive', got {impl!r}")
        self.impl, self.R, self.C = impl, n_heads, d_state
        self.w_a = nn.Linear(d_model, n_heads)
        self.w_v = nn.Linear(d_model, n_heads)
        self.w_k = nn.Linear(d_model, d_state)
        self.w_q = nn.Linear(d_model, d_state)
        self.w_o = nn.Linear(n_heads, d_model)

    def forward(self, u):
        log_a = -nn.functional.softplus(self.w_a(u))
        x = self.w_v(u).unsqueeze(-1) * self.w_k(u).unsqueeze(-2)
        A = torch.cumsum(log_a, dim=1)
        h = ssm_scan(A, x) if self.impl == "nanossm" else ssm_scan_einsum(A, x)
        y = (h * self.w_q(u).unsqueeze(-2)).sum(-1)
        return self.w_o(y)
