"""Run one scan shape a few times (for ncu / compute-sanitizer on the GPU machine).
usage: python tools/profile_one.py B,T,R,C [f32|f16|bf16] [reps] [bwd]
bwd: also run the backward (a reverse scan of the gradient) and initial/final states."""
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
bwd = len(sys.argv) > 4 and sys.argv[4] == "bwd"
for _ in range(reps):
    if bwd:
        xg = x.clone().requires_grad_()
        h0 = torch.randn(B, R, C, device="cuda")
        out, hT = ssm_scan(A, xg, initial_state=h0, return_final_state=True)
        (out.float().sum() + hT.sum()).backward()
    else:
        out = ssm_scan(A, x)
torch.cuda.synchronize()
print("ok", tuple(out.shape), out.dtype)
