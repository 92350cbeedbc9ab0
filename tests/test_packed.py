"""Packed variable-length sequences (cu_seqlens, B = 1) on every device and dtype: forward and
final states against float64 definitions, gradients (x, A, initial states), empty sequences,
reverse, a long pack of very uneven lengths, cu_seqlens checks, and malformed device offsets."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import DEVICES, TOL, assert_grads_match_ref64, make_inputs, ref64, requires_cuda
from nanossm import ssm_scan
from nanossm.reference import rel_err, ssm_scan_chunked64

DTYPES = {"cpu": [torch.float32, torch.float64], "cuda": [torch.float32, torch.float16, torch.bfloat16]}
# empty sequences at the start, in the middle and at the end; lengths 1 .. 300 (many blocks)
CU = [0, 0, 5, 6, 6, 40, 97, 97, 430, 431, 431]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_packed_forward_and_final_states(device, reverse):
    T, N = CU[-1], len(CU) - 1
    for dtype in DTYPES[device]:
        for C in (4, 64, 5):
            A, x = make_inputs((1, T, 3, C), dtype, device, seed=42 + C)
            cu = torch.tensor(CU, dtype=torch.int32 if C == 4 else torch.int64, device=device)
            h0 = None if reverse else torch.randn(N, 3, C, device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
            out = torch.full_like(x, float("nan"))
            _, fin = ssm_scan(A, x, cu_seqlens=cu, initial_state=h0, return_final_state=True, reverse=reverse, out=out)
            ref, ref_fin = ref64(A, x, h0, reverse, cu=CU)
            assert fin.shape == (N, 3, C)
            assert rel_err(out, ref) <= TOL[dtype], f"{dtype} C={C}: {rel_err(out, ref):.2e}"
            assert rel_err(fin, ref_fin) <= TOL[dtype], f"{dtype} C={C} final"


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_packed_forward_without_states(device, reverse):
    """No initial and no final state: on the GPU the lean packed kernels (nostate, core/plan.go),
    over 16-byte packets (C = 64) and single channels (C = 5), longer sequences than one block,
    against float64; the output poisoned first, so an unwritten element fails."""
    cu_list = CU[:-1] + [431, 1500, 1500, 2900]
    T = cu_list[-1]
    for dtype in DTYPES[device]:
        for C in (64, 5):
            A, x = make_inputs((1, T, 3, C), dtype, device, seed=52 + C)
            cu = torch.tensor(cu_list, dtype=torch.int32 if C == 5 else torch.int64, device=device)
            out = torch.full_like(x, float("nan"))
            ssm_scan(A, x, cu_seqlens=cu, reverse=reverse, out=out)
            ref, _ = ref64(A, x, None, reverse, cu=cu_list)
            assert rel_err(out, ref) <= TOL[dtype], f"{dtype} C={C}: {rel_err(out, ref):.2e}"
            # the same call with a final state (the general packed kernel) agrees with it
            y, _ = ssm_scan(A, x, cu_seqlens=cu, reverse=reverse, return_final_state=True)
            assert torch.equal(y, out), f"{dtype} C={C}: the two packed kernels differ"


def _grad_cases(device, T, Cs, seed):
    """(dtype, C, A, x, g, leaves [A, x] ready for gradients) over the device's kernel dtypes
    (float64 has gradcheck below) and the channel counts Cs."""
    for dtype in DTYPES[device]:
        if dtype == torch.float64:
            continue
        for C in Cs:
            A, x = make_inputs((1, T, 2, C), dtype, device, seed=seed + C)
            g = torch.randn(x.shape, generator=torch.Generator().manual_seed(C)).to(device, dtype)
            yield dtype, C, A, x, g, [A.clone().requires_grad_(), x.clone().requires_grad_()]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_packed_gradients(device, reverse):
    T, N = CU[-1], len(CU) - 1
    for dtype, C, A, x, g, leaves in _grad_cases(device, T, (8, 5), seed=7):
        gT = torch.randn(N, 2, C, device=device)
        if not reverse:
            leaves.append(torch.randn(N, 2, C, device=device, requires_grad=True))
        h0 = leaves[2] if not reverse else None
        cu = torch.tensor(CU, device=device)
        out, fin = ssm_scan(leaves[0], leaves[1], cu_seqlens=cu, initial_state=h0, return_final_state=True, reverse=reverse)
        ((out.float() * g.float()).sum() + (fin * gT).sum()).backward()
        assert_grads_match_ref64(leaves, x, g, gT, dtype, f"{dtype} C={C}", reverse, cu=CU)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_packed_gradients_without_states(device, reverse):
    """No initial state and no final state: on the GPU the lean packed backward kernels
    (nostate), over 16-byte packets (C = 64) and single channels (C = 5), sequences longer than
    one block, against float64 autograd; dx and dA bit-identical to the general kernel's (the
    same call with a zero final-state gradient; on the CPU both take the same path)."""
    cu_list = CU[:-1] + [431, 1500, 1500, 2900]
    cu = torch.tensor(cu_list, device=device)
    for dtype, C, A, x, g, leaves in _grad_cases(device, cu_list[-1], (64, 5), seed=17):
        (ssm_scan(leaves[0], leaves[1], cu_seqlens=cu, reverse=reverse).float() * g.float()).sum().backward()
        assert_grads_match_ref64(leaves, x, g, None, dtype, f"{dtype} C={C}", reverse, cu=cu_list)
        Ag, xg = A.clone().requires_grad_(), x.clone().requires_grad_()
        out, fin = ssm_scan(Ag, xg, cu_seqlens=cu, reverse=reverse, return_final_state=True)
        ((out.float() * g.float()).sum() + (fin * 0).sum()).backward()
        assert torch.equal(xg.grad, leaves[1].grad), f"{dtype} C={C}: the two packed backward kernels differ in dx"
        assert torch.equal(Ag.grad, leaves[0].grad), f"{dtype} C={C}: the two packed backward kernels differ in dA"


@pytest.mark.parametrize("device", DEVICES)
def test_packed_many_short_sequences(device):
    """More than 32 sequences (the GPU walk of cu_seqlens then searches, and reads 32 boundaries
    at once), lengths 0 to 40, and a run of 40 empty sequences (more boundaries at one step than
    a warp holds): forward with and without states, and gradients, against float64."""
    g = torch.Generator().manual_seed(5)
    lengths = torch.randint(0, 41, (300,), generator=g).tolist()
    lengths[100:100] = [0] * 40
    cu_list = [0]
    for n in lengths:
        cu_list.append(cu_list[-1] + n)
    T, N = cu_list[-1], len(lengths)
    cu = torch.tensor(cu_list, device=device)
    for dtype in (torch.float32, torch.bfloat16 if device == "cuda" else torch.float64):
        A, x = make_inputs((1, T, 2, 8), dtype, device, seed=61)
        out = torch.full_like(x, float("nan"))
        ssm_scan(A, x, cu_seqlens=cu, out=out)
        ref, _ = ref64(A, x, None, False, cu=cu_list)
        assert rel_err(out, ref) <= TOL[dtype], f"{dtype}: {rel_err(out, ref):.2e}"
        h0 = torch.randn(N, 2, 8, device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        y, fin = ssm_scan(A, x, cu_seqlens=cu, initial_state=h0, return_final_state=True)
        ref, ref_fin = ref64(A, x, h0, False, cu=cu_list)
        assert rel_err(y, ref) <= TOL[dtype] and rel_err(fin, ref_fin) <= TOL[dtype], f"{dtype} with states"
        if dtype != torch.float64:
            gr = torch.randn(x.shape, generator=g).to(device, dtype)
            leaves = [A.clone().requires_grad_(), x.clone().requires_grad_()]
            (ssm_scan(leaves[0], leaves[1], cu_seqlens=cu).float() * gr.float()).sum().backward()
            assert_grads_match_ref64(leaves, x, gr, None, dtype, f"{dtype} gradients", cu=cu_list)


def test_packed_gradcheck_cpu_float64():
    cu = torch.tensor([0, 3, 3, 7, 8], dtype=torch.int64)
    A, x = make_inputs((1, 8, 2, 3), torch.float64, "cpu", seed=43)
    A, x = A.double().requires_grad_(), x.requires_grad_()
    h0 = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, v, h: ssm_scan(a, v, initial_state=h, return_final_state=True, cu_seqlens=cu), (A, x, h0))
    assert torch.autograd.gradcheck(lambda a, v: ssm_scan(a, v, reverse=True, return_final_state=True, cu_seqlens=cu), (A, x))
    # an initial state without asking for the final one (dh0 from dx alone, and dA's h0 term)
    assert torch.autograd.gradcheck(lambda a, v, h: ssm_scan(a, v, initial_state=h, cu_seqlens=cu), (A, x, h0))


@pytest.mark.parametrize("device", DEVICES)
def test_packed_uneven_lengths_long(device):
    """A long pack of very uneven lengths (1 to 100k on the GPU) against each sequence alone in
    float64 (A rebased to A[s-1] in float64: exact differences of the float32 inputs), with
    per-sequence final states."""
    lengths = [1, 20000, 3, 1, 700, 0, 5000, 2] + ([100000, 1, 1, 37] if device == "cuda" else [])
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    A, x = make_inputs((1, cu[-1], 2, 4), torch.float32, device, seed=44)
    out, fin = ssm_scan(A, x, cu_seqlens=torch.tensor(cu, device=device), return_final_state=True)
    for k, n in enumerate(lengths):
        s, e = cu[k], cu[k + 1]
        if n:
            a = A[:, s:e].double() - (A[:, s - 1:s].double() if s else 0.0)
            alone = ssm_scan_chunked64(a, x[:, s:e])
            assert rel_err(out[:, s:e], alone) <= 1e-5, f"sequence {k}: {rel_err(out[:, s:e], alone):.2e}"
            assert rel_err(fin[k], alone[0, -1]) <= 1e-5
        else:
            assert (fin[k] == 0).all()


@requires_cuda
def test_host_cu_seqlens_are_checked_for_cuda_calls():
    A, x = make_inputs((1, 10, 2, 4), torch.float32, "cuda")
    for bad, msg in [([0, 4, 9], "must start at 0 and end at T = 10"), ([0, 6, 4, 10], "must be non-decreasing")]:
        with pytest.raises(ValueError, match=msg):
            ssm_scan(A, x, cu_seqlens=torch.tensor(bad))
    # given on the host, moved to the device: the same result as device offsets
    a = ssm_scan(A, x, cu_seqlens=torch.tensor([0, 3, 10]))
    b = ssm_scan(A, x, cu_seqlens=torch.tensor([0, 3, 10], device="cuda"))
    assert torch.equal(a, b)


# Malformed device offsets (not checked: that would sync the host): out of order, out of [0, T],
# not starting at 0 or ending at T. The results are unspecified; the calls must end (no look-back
# waits forever: a segment's first chunk never waits, core/plan_packed.go packedSegments) and touch no
# memory out of bounds (an illegal address fails the synchronize).
_MALFORMED = """
import sys
sys.path.insert(0, {here!r})
import torch
from conftest import make_inputs
from nanossm import ssm_scan
T = 3000
for cu in ([0, 500, 100, 2000, T], [0, -50, T + 100, 7, T], [5, 5, 5, 9, 2], [T, 0, T, 0, T]):
    for dtype in (torch.float32, torch.bfloat16):
        A, x = make_inputs((1, T, 2, 64), dtype, "cuda", seed=3)
        c = torch.tensor(cu, device="cuda")
        leaves = [A.clone().requires_grad_(), x.clone().requires_grad_()]
        h0 = torch.randn(4, 2, 64, device="cuda", requires_grad=True)
        out, fin = ssm_scan(leaves[0], leaves[1], cu_seqlens=c, initial_state=h0, return_final_state=True)
        (out.float().sum() + fin.sum()).backward()
        ssm_scan(A, x, cu_seqlens=c).float().sum()
        leaves = [A.clone().requires_grad_(), x.clone().requires_grad_()]
        ssm_scan(leaves[0], leaves[1], cu_seqlens=c, reverse=True).float().sum().backward()
torch.cuda.synchronize()
print("done")
"""


@requires_cuda
def test_packed_malformed_device_offsets_end():
    here = os.path.dirname(os.path.abspath(__file__))
    res = subprocess.run([sys.executable, "-c", _MALFORMED.format(here=here)], capture_output=True, text=True,
                         cwd=here, timeout=120)
    assert res.returncode == 0 and "done" in res.stdout, res.stderr[-2000:]


@pytest.mark.parametrize("device", DEVICES)
def test_packed_same_layout_other_sequence_counts(device):
    """One layout packed as 1, 2, 4, 8 and 3 sequences in one process: the workspace, cached by
    layout (python/nanossm/_call.py), must not depend on the number of sequences (a single pass
    cuts a pack into up to one segment per sequence, each with one more look-back slot)."""
    T = 3000
    A, x = make_inputs((1, T, 2, 64), torch.float32, device, seed=71)
    for n in (1, 2, 4, 8, 3):
        cu_list = [round(k * T / n) for k in range(n + 1)]
        out = torch.full_like(x, float("nan"))
        ssm_scan(A, x, cu_seqlens=torch.tensor(cu_list, device=device), out=out)
        ref, _ = ref64(A, x, None, False, cu=cu_list)
        assert rel_err(out, ref) <= TOL[torch.float32], f"{n} sequences: {rel_err(out, ref):.2e}"


# Boundaries where a warp's 16 forward steps (8 backward) begin and end: a sequence of one step
# at a warp's first and at its last step, a start at a warp's first step after the block's
# first, an end at a warp's last step and at a block's last (128 forward steps), a start at a
# block's first. The packed forward's rolled loops take exactly the warps with a start or an end.
CU_EDGES = [0, 1, 15, 16, 31, 32, 47, 48, 49, 64, 128, 129, 143, 144, 300, 303]


@pytest.mark.parametrize("device", DEVICES)
def test_packed_boundaries_at_warp_edges(device):
    """Forward with initial and final states, and without, against float64, the output poisoned
    first: the A table's warps (C = 64 over full warps: R = 2 fp32, R = 4 16-bit), per-lane A
    loads (C = 8) and single channels (C = 5); gradients with states."""
    T, N = CU_EDGES[-1], len(CU_EDGES) - 1
    cu = torch.tensor(CU_EDGES, device=device)
    for dtype in DTYPES[device]:
        for R, C in ((2 if dtype in (torch.float32, torch.float64) else 4, 64), (3, 8), (2, 5)):
            A, x = make_inputs((1, T, R, C), dtype, device, seed=81 + C)
            sdt = torch.float64 if dtype == torch.float64 else torch.float32
            h0 = torch.randn(N, R, C, device=device, dtype=sdt)
            for with_states in (True, False):
                out = torch.full_like(x, float("nan"))
                res = ssm_scan(A, x, cu_seqlens=cu, initial_state=h0 if with_states else None,
                               return_final_state=with_states, out=out)
                ref, ref_fin = ref64(A, x, h0 if with_states else None, False, cu=CU_EDGES)
                what = f"{dtype} R={R} C={C} states={with_states}"
                assert rel_err(out, ref) <= TOL[dtype], f"{what}: {rel_err(out, ref):.2e}"
                if with_states:
                    assert rel_err(res[1], ref_fin) <= TOL[dtype], f"{what}: final states"
        if dtype != torch.float64:
            A, x = make_inputs((1, T, 2, 64), dtype, device, seed=91)
            g = torch.randn(x.shape, generator=torch.Generator().manual_seed(92)).to(device, dtype)
            gT = torch.randn(N, 2, 64, device=device)
            leaves = [A.clone().requires_grad_(), x.clone().requires_grad_(), torch.randn(N, 2, 64, device=device, requires_grad=True)]
            out, fin = ssm_scan(leaves[0], leaves[1], cu_seqlens=cu, initial_state=leaves[2], return_final_state=True)
            ((out.float() * g.float()).sum() + (fin * gT).sum()).backward()
            assert_grads_match_ref64(leaves, x, g, gT, dtype, f"{dtype} gradients", cu=CU_EDGES)


@requires_cuda
@pytest.mark.parametrize("T", [100, 128, 1000])
def test_packed_one_sequence_equals_the_plain_scan(T):
    """One sequence packed with a final state equals the plain scan with one, bit for bit: the
    packed forward's first and last warps run its rolled loops (the start, the end), the others
    the plain scan's loops, and both kernels fold the same aggregates in the same order. (16-bit
    rows over 32+ lanes of 8 channels: with fewer the plain scan takes 4-channel lanes, the packed
    one 8, core/plan_heuristics.go forwardPacketBytes.)"""
    for dtype in DTYPES["cuda"]:
        wide = dtype == torch.float32
        for R, C in (((2, 64), (3, 8), (2, 5)) if wide else ((4, 64), (32, 8), (2, 5))):
            A, x = make_inputs((1, T, R, C), dtype, "cuda", seed=T + C)
            out, fin = ssm_scan(A, x, return_final_state=True)
            pout, pfin = ssm_scan(A, x, cu_seqlens=torch.tensor([0, T], device="cuda"), return_final_state=True)
            assert torch.equal(out, pout) and torch.equal(fin, pfin[0:1]), f"{dtype} T={T} R={R} C={C}"
