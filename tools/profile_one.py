"""Run one scan shape a few times (for ncu / compute-sanitizer on the GPU machine).
usage: python tools/profile_one.py B,T,R,C [f32|f16|bf16] [reps] [bwd|packed|packed0]
bwd: also run the fused backward with initial/final states; packed: B sequences of uneven
lengths packed into one (cu_seqlens, empty ones included), forward and backward, with initial
and final states; packed0: the same without states (the lean packed forward kernels)."""
import sys

import torch

sys.path.insert(0, "python")
from nanossm import ssm_scan  # noqa: E402

shape = tuple(int(v) for v in sys.argv[1].split(","))
dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[sys.argv[2] if len(sys.argv) > 2 else "f32"]
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
B, T, R, C = shape
A = torch.cumsum(-0.2 * torch.rand(B, T, R, device="cuda"), 1)
x = torch.randn(B, T, R, C, device="cuda").to(dtype)
mode = sys.argv[4] if len(sys.argv) > 4 else ""
bwd = mode == "bwd"
if mode in ("packed", "packed0"):
    cuts = sorted(torch.randint(0, B * T + 1, (2 * B,)).tolist())
    cu = torch.tensor([0, *cuts, B * T], device="cuda")
    A, x = A.reshape(1, B * T, R), x.reshape(1, B * T, R, C)
    N = cu.numel() - 1
for _ in range(reps):
    if mode == "packed0":
        xg = x.clone().requires_grad_()
        out = ssm_scan(A, xg, cu_seqlens=cu)
        out.float().sum().backward()
    elif mode == "packed":
        xg = x.clone().requires_grad_()
        h0 = torch.randn(N, R, C, device="cuda")
        out, hT = ssm_scan(A, xg, initial_state=h0, return_final_state=True, cu_seqlens=cu)
        (out.float().sum() + hT.sum()).backward()
    elif bwd:
        xg = x.clone().requires_grad_()
        h0 = torch.randn(B, R, C, device="cuda")
        out, hT = ssm_scan(A, xg, initial_state=h0, return_final_state=True)
        torch.autograd.backward((out, hT), (torch.randn_like(out), torch.randn_like(hT)))
    else:
        out = ssm_scan(A, x)
torch.cuda.synchronize()
print("ok", tuple(out.shape), out.dtype)
