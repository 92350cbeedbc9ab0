"""The fused backward (nanossm_scan_backward): dx, dA and dh0 against float64 autograd through
SPEC's definitions, for every dtype, odd shapes (T = 1, C = 1, C not a multiple of 4, rows that
span several tiles), reverse, initial and final states; every output element written;
bit-identical results run to run."""
import pytest
import torch

from conftest import DEVICES, assert_grads_match_ref64, make_inputs, requires_cuda
from nanossm import ssm_scan
from nanossm._call import _launch_backward
from nanossm.reference import rel_err

DTYPES = {"cpu": [torch.float32], "cuda": [torch.float32, torch.float16, torch.bfloat16]}
# (B,T,R,C): T = 1; C = 5 and C = 1 (scalar lanes); C = 16/64 (whole rows per tile); C = 160 and
# 640 (a row spans 2..5 tiles: dA from partial sums); T = 300 and 1000 (look-back across blocks)
SHAPES = [(2, 1, 3, 4), (2, 77, 3, 5), (1, 1000, 2, 1), (1, 300, 2, 16), (2, 200, 2, 64),
          (1, 150, 1, 160), (1, 130, 2, 640)]
MODES = ["plain", "reverse", "states"]


def _case(device, dtype, shape, mode, seed):
    A, x = make_inputs(shape, dtype, device, seed=seed)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1)).to(device, dtype)
    B, T, R, C = shape
    h0 = torch.randn(B, R, C, device=device) if mode == "states" else None
    gT = torch.randn(B, R, C, device=device) if mode == "states" else None
    return A, x, g, h0, gT


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_gradients_match_float64_autograd(device, shape, mode):
    for dtype in DTYPES[device]:
        A, x, g, h0, gT = _case(device, dtype, shape, mode, seed=sum(shape))
        leaves = [A.clone().requires_grad_(), x.clone().requires_grad_()]
        if h0 is not None:
            leaves.append(h0.clone().requires_grad_())
        out, fin = ssm_scan(leaves[0], leaves[1], initial_state=leaves[2] if h0 is not None else None,
                            return_final_state=True, reverse=mode == "reverse")
        loss = (out.float() * g.float()).sum() + (fin * gT).sum() if gT is not None else (out.float() * g.float()).sum()
        loss.backward()
        assert_grads_match_ref64(leaves, x, g, gT, dtype, f"{dtype} {shape} {mode}", reverse=mode == "reverse")


@pytest.mark.parametrize("device", DEVICES)
def test_backward_writes_every_element(device):
    """The library call alone, on NaN-poisoned outputs: every dx, dA and dh0 element is written."""
    for dtype in DTYPES[device]:
        for shape in [(2, 77, 3, 5), (1, 300, 2, 16), (1, 130, 2, 640)]:
            A, x, g, h0, gT = _case(device, dtype, shape, "states", seed=3)
            out = ssm_scan(A, x, initial_state=h0)
            dx = torch.full_like(x, float("nan"))
            dA = torch.full_like(A, float("nan"))
            dh0 = torch.full_like(h0, float("nan"))
            _launch_backward(A, x, out, g, dx, dA, h0, gT, dh0, None, False)
            for name, t in (("dx", dx), ("dA", dA), ("dh0", dh0)):
                assert torch.isfinite(t).all(), f"{name} {dtype} {shape}: unwritten elements"


@requires_cuda
def test_backward_bit_identical_run_to_run():
    for shape, dtype in [((1, 4096, 2, 64), torch.float32), ((1, 3000, 1, 640), torch.bfloat16), ((4, 999, 3, 5), torch.float16)]:
        A, x, g, h0, gT = _case("cuda", dtype, shape, "states", seed=5)
        out = ssm_scan(A, x, initial_state=h0)
        runs = []
        for _ in range(3):
            dx, dA, dh0 = (torch.empty_like(x), torch.empty_like(A), torch.empty_like(h0))
            _launch_backward(A, x, out, g, dx, dA, h0, gT, dh0, None, False)
            runs.append((dx, dA, dh0))
        for other in runs[1:]:
            for a, b in zip(runs[0], other):
                assert torch.equal(a, b), f"{shape} {dtype}: results differ between runs"


@requires_cuda
@pytest.mark.parametrize("mode", MODES)
def test_long_few_tiles_match_the_cpu_backend(mode):
    """One tile and ~100 chunks (a long look-back chain on the GPU) against the CPU backend
    (float64 state, checked against finite differences in core/backward_test.go), forward and
    gradients; and bit-identical run to run."""
    A, x, g, h0, gT = _case("cuda", torch.float32, (1, 6000, 2, 8), mode, seed=11)

    def run(dev):
        leaves = [t.to(dev).clone().requires_grad_() for t in (A, x)]
        if h0 is not None:
            leaves.append(h0.to(dev).clone().requires_grad_())
        out, fin = ssm_scan(leaves[0], leaves[1], initial_state=leaves[2] if h0 is not None else None,
                            return_final_state=True, reverse=mode == "reverse")
        outs, grads = ([out, fin], [g.to(dev), gT.to(dev)]) if gT is not None else ([out], [g.to(dev)])
        torch.autograd.backward(outs, grads)
        return [out.detach()] + [t.grad for t in leaves]

    gpu, gpu2, cpu = run("cuda"), run("cuda"), run("cpu")
    for name, a, b, c in zip(["out", "dA", "dx", "dh0"], gpu, gpu2, cpu):
        assert torch.equal(a, b), f"{name}: results differ between runs"
        err = rel_err(a, c.to(a.device))
        assert err <= (1e-4 if name == "dA" else 1e-5), f"{name} {mode}: {err:.2e}"


@pytest.mark.parametrize("shape", [(2, 1, 3, 4), (2, 77, 3, 5), (1, 130, 2, 1)])
def test_backward64_reference_matches_autograd(shape):
    """nanossm.reference.ssm_scan_backward64 (the benchmark's check of long backward calls: chunks
    of 16 steps here, so T = 77 and 130 cross several with a partial last one) against float64
    autograd through the einsum baseline, on fresh random inputs."""
    from nanossm.reference import ssm_scan_backward64, ssm_scan_einsum
    A, x = make_inputs(shape, torch.float64, "cpu", seed=40)
    A = A.double().requires_grad_()  # (make_inputs gives A in float32, the op's dtype)
    x.requires_grad_()
    g = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(41))
    out = ssm_scan_einsum(A, x)
    (out * g).sum().backward()
    dx, dA, out64 = ssm_scan_backward64(A.detach(), x.detach(), g, chunk=16)
    assert rel_err(out64, out.detach()) <= 1e-13
    assert rel_err(dx, x.grad) <= 1e-13
    assert (dA - A.grad).norm() <= 1e-12 * max(1.0, A.grad.norm().item())


def test_backward64_reference_over_a_long_decay():
    """ssm_scan_backward64 where A falls below -709 (exp(-A) overflows float64): the reversed scan
    starts at a = -A[T-1] > 709, and a carry term exp(a - 0) * 0 was inf * 0 = NaN before its
    first chunk. Against the step-by-step float64 recurrence (ssm_scan_sequential), forward and
    reverse, on fresh random inputs."""
    from nanossm.reference import ssm_scan_backward64, ssm_scan_sequential
    gen = torch.Generator().manual_seed(44)
    B, T, R, C = 1, 300, 2, 3
    A = torch.cumsum(-5.0 * torch.rand(B, T, R, generator=gen, dtype=torch.float64), dim=1)
    assert A.min() < -709
    x = torch.randn(B, T, R, C, generator=gen, dtype=torch.float64)
    g = torch.randn(B, T, R, C, generator=gen, dtype=torch.float64)
    dx, dA, out = ssm_scan_backward64(A, x, g, chunk=16)
    out_ref = ssm_scan_sequential(A, x)[0]
    dx_ref = ssm_scan_sequential(A, g, reverse=True)[0]
    assert torch.isfinite(dx).all() and torch.isfinite(dA).all()
    assert rel_err(out, out_ref) <= 1e-13
    assert rel_err(dx, dx_ref) <= 1e-13
    dA_ref = (g * out_ref - x * dx_ref).sum(-1)
    assert (dA - dA_ref).norm() <= 1e-12 * dA_ref.norm()


def _chunkwise_err(got, ref, steps):
    """The largest relative error over the chunks of `steps` steps (the last one short) of (B,T,R,C)
    tensors: a wrong carry into one chunk of a thousand moves the whole tensor's error by less
    than bf16's rounding, and its chunk's error by the carry's share of it."""
    B, T, R, C = got.shape
    pad = (-T) % steps
    d = torch.nn.functional.pad((got.double() - ref).reshape(B, T, R * C), (0, 0, 0, pad))
    r = torch.nn.functional.pad(ref.double().reshape(B, T, R * C), (0, 0, 0, pad))
    num = d.reshape(B, -1, steps * R * C).norm(dim=-1)
    den = r.reshape(B, -1, steps * R * C).norm(dim=-1).clamp_min(1e-300)
    return (num / den).max().item()


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_long_chains_with_carry_groups_match_float64(dtype):
    """The 16-bit backward over 8-channel lanes on a chain of 1026 chunks (64 steps each, the last
    of one step) over more tiles than a third of a pass could leave to three passes (tiles * 32 >
    SMs: core/plan.go), the plan that carries by groups of chunks (8 over so few tiles on
    so long a chain: core/plan_heuristics.go groupChunks, its grouped kernel): dx chunk by chunk and dA against
    float64 (reference.ssm_scan_backward64), every element written (NaN-poisoned outputs), bit-identical
    run to run. (States and reverse on the grouped kernels: test_plans, under the knobs.)"""
    from conftest import GRAD_TOL, dA_err
    from nanossm.reference import ssm_scan_backward64
    # 64 channels: 8 lanes of 8 per row, 4 rows per tile; one tile more than SMs / 32
    tiles = torch.cuda.get_device_properties(0).multi_processor_count // 32 + 1
    A, x, g, _, _ = _case("cuda", dtype, (1, 65601, 4 * tiles, 64), "plain", seed=17)
    out = ssm_scan(A, x)
    runs = []
    for _ in range(2):
        dx, dA = torch.full_like(x, float("nan")), torch.full_like(A, float("nan"))
        _launch_backward(A, x, out, g, dx, dA, None, None, None, None, False)
        runs.append((dx, dA))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1]), "results differ between runs"
    dx, dA = runs[0]
    assert torch.isfinite(dx).all() and torch.isfinite(dA).all(), "unwritten elements"
    dx64, dA64, out64 = ssm_scan_backward64(A, x, g)
    tx, tA = GRAD_TOL[dtype]
    e = _chunkwise_err(dx, dx64, 64)
    assert e <= tx, f"dx, worst chunk: {e:.2e}"
    e = dA_err(dA, dA64, x, g, out64, dx64)
    assert e <= tA, f"dA: {e:.2e}"
