"""max_seqlen, the packed calls' plan hint (ssm_scan(..., cu_seqlens=, max_seqlen=)): checked by
name, and any value gives results within tolerance of float64, forward, final states and every
gradient, through eager calls, the registered op and torch.compile. On the GPU the pack below
(one sequence of 18000 steps among 40, over one or two tiles) takes one pass cut into 31 segments
without the hint and three passes with a true one (core/plan.go; core/plan_test.go pins the plans).
The float64 reference is the CPU backend's float64 scan and gradients (themselves checked
against the einsum definitions in test_packed.py): the einsum's (T,T) matrix of an 18000-step
sequence would not fit."""
import pytest
import torch

from conftest import DEVICES, GRAD_TOL, TOL, dA_err, make_inputs
from nanossm import ssm_scan
from nanossm.reference import rel_err

LENGTHS = [50] * 18 + [0, 1] + [18000] + [50] * 19  # 40 sequences, 19951 steps
CU = torch.tensor(LENGTHS).cumsum(0).tolist()
CU = [0] + CU
T, N, LONGEST = CU[-1], len(LENGTHS), max(LENGTHS)
DTYPES = {"cpu": [torch.float32], "cuda": [torch.float32, torch.float16, torch.bfloat16]}


def test_max_seqlen_is_checked():
    A, x = make_inputs((1, 10, 2, 4))
    cu = torch.tensor([0, 4, 10])
    for bad, err, msg in [(-1, ValueError, "max_seqlen: expected >= 0"), (1 << 63, ValueError, "and < 2"),
                          (True, TypeError, "max_seqlen: expected an int"),
                          (2.5, TypeError, "max_seqlen: expected an int, got float"),
                          (torch.tensor(6), TypeError, "max_seqlen: expected an int, got Tensor")]:
        with pytest.raises(err, match=msg):
            ssm_scan(A, x, cu_seqlens=cu, max_seqlen=bad)
    with pytest.raises(ValueError, match=r"max_seqlen: given \(6\) without cu_seqlens"):
        ssm_scan(A, x, max_seqlen=6)
    ref = ssm_scan(A, x, cu_seqlens=cu)
    for ok in (0, 6, 10, 99, (1 << 63) - 1):  # (any value)
        assert torch.equal(ssm_scan(A, x, cu_seqlens=cu, max_seqlen=ok), ref)
    assert torch.equal(ssm_scan(A, x, max_seqlen=0), ssm_scan(A, x))  # 0: unknown, allowed alone


def _reference(A, x, h0, g, gT):
    """out, final state, dA, dx, dh0 of sum(out*g) + sum(final*gT) by the CPU backend in float64."""
    leaves = [t.detach().cpu().double().requires_grad_() for t in (A, x, h0)]
    out, fin = ssm_scan(*leaves[:2], initial_state=leaves[2], cu_seqlens=torch.tensor(CU), return_final_state=True)
    ((out * g.cpu().double()).sum() + (fin * gT.cpu().double()).sum()).backward()
    return [out.detach(), fin.detach()] + [t.grad for t in leaves]


@pytest.mark.parametrize("device", DEVICES)
def test_any_max_seqlen_gives_the_results(device):
    """hints None, the truth, 1 and T (and, on the GPU, host offsets, which give the truth by
    themselves): forward with poisoned outputs, final states and gradients within TOL/GRAD_TOL of
    float64; a wrong hint may cost time, never accuracy."""
    for dtype in DTYPES[device]:
        A, x = make_inputs((1, T, 4, 64), dtype, device, seed=61)
        gen = torch.Generator().manual_seed(62)
        h0, gT = torch.randn(N, 4, 64, generator=gen), torch.randn(N, 4, 64, generator=gen)
        g = torch.randn(x.shape, generator=gen).to(dtype)
        ref = _reference(A, x, h0, g, gT)
        tol, (tx, tA) = TOL[dtype], GRAD_TOL[dtype]
        cu_dev = torch.tensor(CU, dtype=torch.int32, device=device)
        runs = [(None, cu_dev), (LONGEST, cu_dev), (1, cu_dev), (T, cu_dev)]
        if device == "cuda":
            runs.append((None, torch.tensor(CU)))
        for hint, cu in runs:
            what = f"{dtype} max_seqlen={hint} cu on {cu.device}"
            out = torch.full_like(x, float("nan"))
            _, fin = ssm_scan(A, x, initial_state=h0.to(device), cu_seqlens=cu, max_seqlen=hint,
                              return_final_state=True, out=out)
            assert rel_err(out, ref[0].to(device)) <= tol, f"{what}: out {rel_err(out, ref[0].to(device)):.2e}"
            assert rel_err(fin, ref[1].to(device)) <= tol, f"{what}: final state"
            leaves = [t.to(device).clone().requires_grad_() for t in (A, x, h0)]
            out, fin = ssm_scan(*leaves[:2], initial_state=leaves[2], cu_seqlens=cu, max_seqlen=hint,
                                return_final_state=True)
            ((out.float() * g.to(device).float()).sum() + (fin * gT.to(device)).sum()).backward()
            d = lambda t: t.to(device)  # noqa: E731
            assert rel_err(leaves[1].grad, d(ref[3])) <= tx, f"{what}: dx {rel_err(leaves[1].grad, d(ref[3])):.2e}"
            e = dA_err(leaves[0].grad, d(ref[2]), x, d(g), d(ref[0]), d(ref[3]))
            assert e <= tA, f"{what}: dA {e:.2e}"
            assert rel_err(leaves[2].grad, d(ref[4])) <= tx, f"{what}: dh0"


@pytest.mark.parametrize("device", DEVICES)
def test_max_seqlen_through_the_op_and_compile(device):
    """The registered ops take max_seqlen (opcheck), and torch.compile(fullgraph=True) of a packed
    call with it, backward included, equals the eager call."""
    A, x = make_inputs((1, 70, 3, 8), torch.float32, device, seed=63)
    cu = torch.tensor([0, 30, 30, 70], device=device)
    torch.library.opcheck(torch.ops.nanossm.scan.default, (A, x, None, False, True, cu, 40))
    out = torch.ops.nanossm.scan(A, x, None, False, False, cu, 40)[0]
    torch.library.opcheck(torch.ops.nanossm.scan_backward.default, (A, x, out, torch.randn_like(x), None, None, False, cu, 40))

    def loss(a, v):
        return ssm_scan(a, v, cu_seqlens=cu, max_seqlen=40).square().sum()

    results = []
    torch._dynamo.reset()
    for f in (loss, torch.compile(loss, fullgraph=True)):
        leaves = [t.clone().requires_grad_() for t in (A, x)]
        value = f(*leaves)
        value.backward()
        results.append([value.detach()] + [t.grad for t in leaves])
    for a, b in zip(*results):
        assert rel_err(a, b) <= 1e-5


def test_max_seqlen_changes_do_not_recompile():
    """Varlen training changes max_seqlen every batch: a compiled call takes it as a symbolic int
    (one recompile from the first value to a dynamic one at most), so twelve lengths stay within
    the recompile limit (its default 8 would raise under fullgraph)."""
    A, x = make_inputs((1, 70, 3, 8), torch.float32, "cpu", seed=64)
    cu = torch.tensor([0, 30, 30, 70])

    def f(a, v, m):
        return ssm_scan(a, v, cu_seqlens=cu, max_seqlen=m)

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    ref = f(A, x, 40)
    for m in range(40, 52):
        assert rel_err(compiled(A, x, m), ref) <= 1e-6, m
    torch._dynamo.reset()
