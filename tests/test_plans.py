"""The GPU plans of few tiles and many chunks (core/plan.go) against the CPU backend (float64
state), forward and gradients, plain, with states, reverse and packed (with and without states),
fp32 and bf16, a row over several tiles; bit-identical run to run. By default the forward over
packets takes one pass with carries by large groups (fewTileGroup), and so does the fp32
backward over one tile of T >= 131072 (LONG_CASES), and packs (9 sequences here) one pass cut
into segments of up to 64 chunks on average (core/plan_packed.go packedChain); the other
backwards and single-channel lanes three passes (aggregates, every chunk's prefix, then the
scan). Long-chunk kernels
(core/plan_heuristics.go longChunks) take the bf16 forward over one tile of 4-channel lanes of
T >= 32768 (bf16-long in LONG_CASES; bf16 and bf16-reverse under NANOSSM_TUNE_LONG=2), the
bf16 forward over 8-channel lanes of T >= 1536 over few tiles or two long blocks per SM
(bf16-wide: one tile, 114 chunks of 176 steps, groups of 16; bf16-wide-long in LONG_CASES, 273
chunks, reverse), the 16-bit packed forwards over 8-channel lanes of more tiles than SMs / 32
(bf16-packed and bf16-packed0, one tile, under NANOSSM_TUNE_LONG=2: 114 long chunks) and the fp32 backwards over 5-16 tiles (wide, long-bwd; the rule allows up to SMs / 4); forced
plans (three passes everywhere, the single pass, other carry groups, packed segments) run in a
child process with a knob set (NANOSSM_TUNE_*): knobs are read when the library loads."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import dA_err, make_inputs, requires_cuda
from nanossm import ssm_scan
from nanossm.reference import rel_err

# (name, (B,T,R,C), dtype, mode): one tile and 157 forward / 313 backward chunks (625 in the
# fp32 backward over three passes, which takes 4 warps; bf16-wide's forward 114 long ones); a row over 5
# tiles (C = 640); bf16 packets of 4 channels (8 lanes) and of 8 (a full warp of them); scalar
# lanes (C = 5: no 16-byte packets); packed sequences with starts inside chunks and empty ones.
CASES = [("plain", (1, 20000, 2, 8), torch.float32, "plain"),
         ("states", (1, 20000, 2, 8), torch.float32, "states"),
         ("reverse", (1, 20000, 2, 8), torch.float32, "reverse"),
         ("wide", (1, 9000, 1, 640), torch.float32, "states"),
         # 10 tiles of whole rows: the fp32 backward over long chunks (71 of them)
         ("long-bwd", (1, 9000, 20, 64), torch.float32, "reverse"),
         ("bf16", (1, 20000, 1, 64), torch.bfloat16, "states"),
         ("bf16-wide", (1, 20000, 4, 64), torch.bfloat16, "states"),
         ("bf16-reverse", (1, 20000, 1, 64), torch.bfloat16, "reverse"),
         ("scalar-lanes", (1, 20000, 1, 5), torch.float32, "states"),
         ("packed", (1, 20000, 2, 8), torch.float32, "packed"),
         ("packed-reverse", (1, 20000, 2, 8), torch.float32, "packed-reverse"),
         # with states over the A table (full warps of one and of four rows): the packed
         # forward's rolled loops read their decays from it
         ("packed-table", (1, 20000, 2, 64), torch.float32, "packed"),
         ("bf16-packed", (1, 20000, 4, 64), torch.bfloat16, "packed"),
         # packed without states: the lean kernels (*_packed_nostate_*)
         ("bf16-packed0", (1, 20000, 4, 64), torch.bfloat16, "packed0"),
         ("bf16-packed0-reverse", (1, 20000, 1, 64), torch.bfloat16, "packed0-reverse"),
         ("packed0", (1, 20000, 2, 8), torch.float32, "packed0"),
         # a row over two tiles of the backward (K = 2: dA's partial sums, then their reduction and
         # the h0 term), in one pass with 9 segments by default (added in session 33, after its
         # last GPU call: first run on the GPU next session)
         ("packed-wide", (1, 20000, 1, 256), torch.float32, "packed")]
SEQLENS = [0, 3000, 1, 0, 7777, 129, 5000, 4093, 0]  # sums to 20000
# The default plan of a long one-tile chain: the fp32 backward over one tile of 2048+ chunks takes
# one pass with carries by groups of 32 (core/plan_heuristics.go fewTileGroup; 2049 chunks here,
# the last group short; core/plan_test.go names the plan).
# And the 16-bit forward over one tile of 4-channel lanes and T >= 32768 takes long chunks (157 of
# 256 steps, groups of 64: longChunks), and over one tile of 8-channel lanes (273 chunks of 176
# steps here, groups of 16).
LONG_CASES = [("one-tile-one-pass", (1, 131100, 2, 8), torch.float32, "states"),
              ("one-tile-one-pass-reverse", (1, 131100, 2, 8), torch.float32, "reverse"),
              ("bf16-long", (1, 40000, 1, 64), torch.bfloat16, "states"),
              ("bf16-wide-long", (1, 48000, 4, 64), torch.bfloat16, "reverse")]


def _inputs(shape, dtype, mode, seed=21):
    A, x = make_inputs(shape, dtype, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    g = torch.randn(x.shape, generator=gen).to(dtype)
    cu = torch.tensor([0] + SEQLENS).cumsum(0) if mode.startswith("packed") else None
    states = cu.numel() - 1 if cu is not None else shape[0]
    # reverse scans take no initial state; they do return a final state
    h0 = torch.randn(states, shape[2], shape[3], generator=gen) if mode in ("states", "packed") else None
    gT = torch.randn(states, shape[2], shape[3], generator=gen) if mode != "plain" and not _stateless(mode) else None
    return A, x, g, h0, gT, cu


def _stateless(mode):
    return mode.startswith("packed0")


def _run(dev, A, x, g, h0, gT, mode, cu):
    """out, final state and the gradients of sum(out*g) + sum(final*gT) on dev."""
    leaves = [t.to(dev).clone().requires_grad_() for t in (A, x)]
    if h0 is not None:
        leaves.append(h0.to(dev).clone().requires_grad_())
    res = ssm_scan(leaves[0], leaves[1], initial_state=leaves[2] if h0 is not None else None,
                   return_final_state=not _stateless(mode), reverse=mode.endswith("reverse"),
                   cu_seqlens=None if cu is None else cu.to(dev))
    out, fin = (res, None) if _stateless(mode) else res
    outs, grads = [out], [g.to(dev)]
    if gT is not None:
        outs, grads = outs + [fin], grads + [gT.to(dev)]
    torch.autograd.backward(outs, grads)
    return [out.detach(), None if fin is None else fin.detach()] + [t.grad for t in leaves] + [None] * (3 - len(leaves))


def compute_all(path, which="CASES"):
    """Every case of the list named `which` on the GPU, saved to path (the child process of the
    cross-plan tests)."""
    results = {}
    for name, shape, dtype, mode in globals()[which]:
        A, x, g, h0, gT, cu = _inputs(shape, dtype, mode)
        results[name] = [None if t is None else t.cpu() for t in _run("cuda", A, x, g, h0, gT, mode, cu)]
    torch.save(results, path)


NAMES = ["out", "final", "dA", "dx", "dh0"]
# conftest.GRAD_TOL: fp32 within 1e-5 (dA 1e-4) of the CPU backend's float64 state; bf16 as its
# I/O rounding
TOLS = {torch.float32: (1e-5, 1e-4), torch.bfloat16: (2e-2, 6e-2)}


def _assert_runs_match_cpu(name, shape, dtype, mode, run1, run2):
    """Two GPU runs of a case (_run's lists) are bit-identical and within TOLS of the CPU backend."""
    A, x, g, h0, gT, cu = _inputs(shape, dtype, mode)
    cpu = _run("cpu", A.float(), x.float(), g.float(), h0, gT, mode, cu)
    tol, tol_dA = TOLS[dtype]
    for what, a, b, c in zip(NAMES, run1, run2, cpu):
        if a is None:  # no initial state, no dh0
            continue
        assert torch.equal(a, b), f"{name} {what}: results differ between runs"
        dev = lambda t: t.to(a.device)  # noqa: E731
        if what == "dA":  # relative to the terms it sums (conftest.dA_err)
            err = dA_err(a, dev(c), dev(x), dev(g), dev(cpu[0]), dev(cpu[3]))
        else:
            err = rel_err(a.float(), dev(c).float())
        assert err <= (tol_dA if what == "dA" else tol), f"{name} {what}: {err:.2e}"


@requires_cuda
@pytest.mark.parametrize("name,shape,dtype,mode", CASES + LONG_CASES, ids=[c[0] for c in CASES + LONG_CASES])
def test_default_plans_match_the_cpu_backend(name, shape, dtype, mode):
    A, x, g, h0, gT, cu = _inputs(shape, dtype, mode)
    _assert_runs_match_cpu(name, shape, dtype, mode, _run("cuda", A, x, g, h0, gT, mode, cu),
                           _run("cuda", A, x, g, h0, gT, mode, cu))


def _in_child(tmp_path, which, **knobs):
    """compute_all(which) in a child process with the given NANOSSM_TUNE_* knobs."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = tmp_path / ("_".join(f"{k}{v}" for k, v in knobs.items()) + ".pt")
    env = dict(os.environ, **{f"NANOSSM_TUNE_{k}": str(v) for k, v in knobs.items()})
    code = f"import sys; sys.path.insert(0, {here!r}); import test_plans; test_plans.compute_all({str(path)!r}, {which!r})"
    # (a timeout: a deadlocked kernel fails the test instead of hanging the suite)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=here, timeout=300)
    return torch.load(path)


@requires_cuda
def test_forced_three_passes_match_the_cpu_backend(tmp_path):
    """Three passes for every case, the forward over packets included (its default is one pass
    with carries by groups; bf16-wide over long chunks, 114 of 176 steps): against the CPU
    backend, bit-identical in two processes."""
    _knob_runs_match_cpu(tmp_path, "CASES", PASSES=3)


@requires_cuda
def test_three_passes_match_the_single_pass(tmp_path):
    single, three = _in_child(tmp_path, "CASES", PASSES=1), _in_child(tmp_path, "CASES", PASSES=3)
    for name, shape, dtype, mode in CASES:
        tol, tol_dA = TOLS[dtype]
        for what, a, b in zip(NAMES, single[name], three[name]):
            if a is None:
                continue
            err = rel_err(a.float(), b.float())
            assert err <= (tol_dA if what == "dA" else tol) / 2, f"{name} {what}: {err:.2e}"


@requires_cuda
@pytest.mark.parametrize("group", [2, 3, 4, 5, 8, 16, 33])
def test_grouped_carries_match_the_cpu_backend(tmp_path, group):
    """The single pass with carries by groups of chunks (core/plan_heuristics.go groupChunks: the
    16-bit forward over 8-channel lanes, here bf16-wide, the forward's grouped kernels over
    4-channel lanes, and the backward's grouped kernels over packets, fp32 and bf16, with states,
    reverse and a row over 5 tiles; the packed and single-channel cases run their per-chunk
    look-back under the same knobs), forced on 157 forward and 313 backward chunks (bf16-wide: 114
    long ones; groups 3 and 8 run the module's chunks, NANOSSM_TUNE_LONG=1, so both of its kernels
    see small and large groups; group sizes that do not divide them) against the CPU backend;
    bit-identical in two processes. (2, 3 and 4: groupChunks' choices, 4 the 16-bit backward's over
    few tiles; 16 and 33: group_carry_wide's shares, over eight warps in the forward (2 chunks
    each, the last share short, and 4 each), over four in the fp32 backward and two in the 16-bit
    one.)"""
    long = dict(LONG=1) if group in (3, 8) else {}
    _knob_runs_match_cpu(tmp_path, "CASES", PASSES=1, GROUP=group, **long)


def _knob_runs_match_cpu(tmp_path, which, **knobs):
    """The cases of the list named `which`, run in two child processes with the knobs: the two
    runs bit-identical and within TOLS of the CPU backend."""
    runs = []
    for k in range(2):
        (tmp_path / str(k)).mkdir()
        runs.append(_in_child(tmp_path / str(k), which, **knobs))
    for name, shape, dtype, mode in globals()[which]:
        _assert_runs_match_cpu(name, shape, dtype, mode, runs[0][name], runs[1][name])


@requires_cuda
@pytest.mark.parametrize("knobs", [dict(LONG=1), dict(LONG=2), dict(LONG=2, PASSES=1, GROUP=3), dict(LONG=2, PASSES=1, GROUP=33)],
                         ids=["never", "always", "always-G3", "always-G33"])
def test_long_chunks_match_the_cpu_backend(tmp_path, knobs):
    """Long-chunk kernels never (LONG=1: the module's chunks, so wide and long-bwd take the short
    late backward) and wherever the plan's form has one (LONG=2: the grouped 16-bit forward
    over 4-channel lanes of bf16 and bf16-reverse, T = 20000, the 16-bit forward over 8-channel
    lanes and the fp32 late backwards of any tiles), the forwards also with small groups (G = 3:
    group_carry_wide's shares of one chunk, group_carry's) and groups of 33 (shares over eight
    warps, the last short); against the CPU backend, bit-identical in two processes."""
    _knob_runs_match_cpu(tmp_path, "CASES", **knobs)


PACKED_CASES = [c for c in CASES if c[3].startswith("packed")]


@requires_cuda
@pytest.mark.parametrize("segments,long", [(2, 0), (5, 0), (9, 0), (5, 2), (9, 2)])
def test_packed_segments_match_the_cpu_backend(tmp_path, segments, long):
    """A packed single pass cut into segments at sequence starts (core/plan_packed.go
    packedSegments, segment_chunk in kernels/packed.cuh), forced (NANOSSM_TUNE_SEGMENTS) on one
    tile of 157 chunks: cuts where empty sequence 3 sits, before the 7777-step one (2 and 5) and,
    with 9, one per sequence (empty segments included); with LONG=2 the bf16 ones over long chunks
    (114 of them; by default one tile keeps the module's chunks); against the CPU backend,
    bit-identical in two processes."""
    knobs = dict(LONG=long) if long else {}
    _knob_runs_match_cpu(tmp_path, "PACKED_CASES", PASSES=1, SEGMENTS=segments, **knobs)
