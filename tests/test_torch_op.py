"""nanossm as a PyTorch op: torch.library registration (opcheck), torch.compile with fullgraph and
a backward, and CUDA-graph capture and replay of forward and backward."""
import pytest
import torch

from conftest import DEVICES, make_inputs, requires_cuda
from nanossm import ssm_scan
from nanossm.reference import rel_err, ssm_scan_einsum


class TinySSM(torch.nn.Module):
    """log-decay and x from projections of u, the scan, a read-out: enough to exercise compile."""

    def __init__(self, d=8, R=3, C=4):
        super().__init__()
        self.R, self.C = R, C
        self.a = torch.nn.Linear(d, R)
        self.v = torch.nn.Linear(d, R * C)

    def forward(self, u, scan=ssm_scan):
        B, T, _ = u.shape
        log_a = -torch.nn.functional.softplus(self.a(u))
        x = self.v(u).view(B, T, self.R, self.C)
        return scan(torch.cumsum(log_a, dim=1), x).square().mean()


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    A, x = make_inputs((2, 70, 3, 4), torch.float32, device, seed=30)
    h0 = torch.randn(2, 3, 4, device=device)
    for args in [(A, x, None, False, False), (A, x, h0, False, True), (A, x, None, True, False)]:
        torch.library.opcheck(torch.ops.nanossm.scan.default, args)
    out = torch.ops.nanossm.scan(A, x, h0, False, False)[0]
    g, gT = torch.randn_like(x), torch.randn_like(h0)
    for args in [(A, x, out, g, None, None, False), (A, x, out, g, gT, h0, False), (A, x, out, g, None, None, True)]:
        torch.library.opcheck(torch.ops.nanossm.scan_backward.default, args)


@pytest.mark.parametrize("device", DEVICES)
def test_eager_autograd_equals_the_registered_op(device):
    """Eager ssm_scan takes _Scan (autograd.Function), not the registered op's autograd: both
    must give the same bits, forward and every gradient, plain and with every option."""
    from nanossm.autograd import _Scan
    A, x = make_inputs((1, 130, 3, 8), torch.float32, device, seed=34)
    h0, g = torch.randn(1, 3, 8, device=device), torch.randn_like(x)
    cu = torch.tensor([0, 50, 50, 130], device=device)
    for h, reverse, final, seq in [(None, False, False, None), (h0, False, True, None), (None, True, True, None),
                                   (h0[:1].expand(3, -1, -1).contiguous(), False, True, cu)]:
        results = []
        for scan in (_Scan.apply, torch.ops.nanossm.scan):
            leaves = [t.clone().requires_grad_() for t in (A, x)] + ([h.clone().requires_grad_()] if h is not None else [])
            out, hT = scan(leaves[0], leaves[1], leaves[2] if h is not None else None, reverse, final, seq)
            loss = (out * g).sum() + (hT.square().sum() if final else 0)
            loss.backward()
            results.append([out.detach(), hT.detach()] + [t.grad for t in leaves])
        for a, b in zip(*results):
            assert torch.equal(a, b), (h is not None, reverse, final, seq is not None)


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_with_backward(device):
    torch.manual_seed(0)
    model = TinySSM().to(device)
    u = torch.randn(2, 50, 8, device=device)
    eager = model(u)
    eager.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True)
    loss = compiled(u)
    loss.backward()
    assert rel_err(loss.detach(), eager.detach()) <= 1e-5
    for p, g in zip(model.parameters(), grads):
        assert rel_err(p.grad, g) <= 1e-4
    # and the same model through the einsum baseline agrees
    ref = model(u, scan=lambda A, x: ssm_scan_einsum(A.double(), x.double()).float())
    assert rel_err(loss.detach(), ref.detach()) <= 1e-5


@requires_cuda
@pytest.mark.parametrize("shape", [(2, 300, 3, 8), (1, 8300, 1, 8), (1, 8300, 1, 5)])
def test_cuda_graph_capture_and_replay(shape):
    """(2,300,3,8): the single pass behind the workspace reset, launched early; (1,8300,1,8):
    one tile of 65 forward / 260 backward chunks (4 warps): on any device of 32+ SMs the forward
    in one pass with carries by groups of 48 (core/plan_heuristics.go fewTileGroup), the backward
    in three passes (core/plan.go), passes 2 and 3 launched early too; (1,8300,1,5): single-channel
    lanes, the forward in three passes as well."""
    A, x = make_inputs(shape, torch.float32, "cuda", seed=31)
    sA, sx = A.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn_like(x)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm up outside the capture (module load, workspace sizes)
        for _ in range(2):
            ssm_scan(sA, sx).backward(g)
            sA.grad = sx.grad = None
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ssm_scan(sA, sx)
        out.backward(g)
    for seed in (32, 33):  # new inputs copied into the static ones, then replay
        A2, x2 = make_inputs(shape, torch.float32, "cuda", seed=seed)
        with torch.no_grad():
            sA.copy_(A2)
            sx.copy_(x2)
        graph.replay()
        torch.cuda.synchronize()
        rA, rx = A2.double().requires_grad_(), x2.double().requires_grad_()
        ref = ssm_scan_einsum(rA, rx)
        ref.backward(g.double())
        assert rel_err(out, ref) <= 1e-5
        assert rel_err(sx.grad, rx.grad) <= 1e-5
        assert rel_err(sA.grad, rA.grad) <= 1e-4


def test_torch_func_grad_and_vmap():
    """torch.func.grad through ssm_scan (x, A and the initial state) matches the float64 einsum
    baseline's; torch.func.vmap is refused with a clear error, not a storage error."""
    A, x = make_inputs((1, 40, 3, 4), torch.float32, "cpu", seed=35)
    h0 = torch.randn(1, 3, 4)
    f = lambda A, x: ssm_scan(A, x).square().sum()  # noqa: E731
    r = lambda A, x: ssm_scan_einsum(A, x).square().sum()  # noqa: E731
    gA, gx = torch.func.grad(f, argnums=(0, 1))(A, x)
    rA, rx = torch.func.grad(r, argnums=(0, 1))(A.double(), x.double())
    assert rel_err(gA, rA) <= 1e-4 and rel_err(gx, rx) <= 1e-5
    gh = torch.func.grad(lambda h: ssm_scan(A, x, initial_state=h, return_final_state=True)[1].sum())(h0)
    assert torch.allclose(gh, torch.exp(A[:, -1].unsqueeze(-1)).expand_as(h0), rtol=1e-5)  # d hT / d h0
    for call in (lambda xb: ssm_scan(A, xb), lambda xb: ssm_scan(A, xb, reverse=True)):
        with pytest.raises(NotImplementedError, match="vmap is not supported"):
            torch.func.vmap(call)(x[None].expand(2, -1, -1, -1, -1).contiguous())
