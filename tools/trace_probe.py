"""Per-block timelines of the scan kernels: what a block does between landing its data and handing
its carry on. Not a test; a measurement tool (session 21).

It needs a module built with the trace probe (docs/experiments/trace-probe.patch):
    tools/variant_module.sh trace --patch docs/experiments/trace-probe.patch
and then, on the GPU machine,
    NANOSSM_MODULE=$PWD/build/var_trace.fatbin python tools/trace_probe.py fwd:bf16:4,8192,64,64 bwd:f32:1,65536,64,64
or, on any machine, the analysis of saved traces:
    python tools/trace_probe.py --analyze DIR/trace_*.npy

The probe's kernels write 16 words per block after the look-back slots of the workspace (lane 0 of
the block's last warp, the publisher, keeps 15 of them in shared memory and copies them out before
phase 3, so that no global store sits on the path they time; 6 and 15 go to global memory where they
are taken): 0 entry, 1 SM, 2 chunk, 3 tile, 4 landed (after the block barrier), 5 its prefix
published, 6 the end of its steps, 7 look-back tries << 32 | depth, 8 its aggregate published, 9 /
12 / 13 the first three polls back (bit 63 of 9: the first missed), 10 the poll that found a prefix
back, 11 the replay done, 14 its fold of the sub-chunk aggregates done, 15 the block's last warp
done (global timer, ns). In the grouped path (session 27; analysed when NANOSSM_TUNE_GROUP > 1)
12 is the group's earlier aggregates in, 9 / 10 the first poll of the group predecessor's prefix
and its finding, 7 that poll's count << 32, 11 the carry formed (the probe's words spill 40-48
bytes in the grouped kernels: their timings carry that). This script gives the library a
workspace with room for them (it wraps nanossm._call._attach_workspace), runs the call, and
reads them back. Plans are forced to the per-chunk look-back (NANOSSM_TUNE_GROUP=1) unless the
environment says otherwise (set it to the plan's group, e.g. 32 for the one-tile fp32 backward,
to trace the grouped path), and to a single pass (NANOSSM_TUNE_PASSES=1). Only the layouts whose trace offset this script can compute are taken:
8-warp blocks (no NANOSSM_TUNE_WARPS / _FWD_STEPS / _BWD_STEPS), packets of 16 bytes (8 for the
16-bit forward when B*R*C/8 < 32, single channels when C is no multiple of the packet, as the
planner does), and in the backward C / VEC <= 32 (no tiles share a row: else dA's partial sums lie
where the trace would). (Session 21's first form, trace-probe-v1.patch, stored each word to global
memory where it was taken, ~0.3-0.8 us per store on the path; its traces have no word 15, and 12-13
were the two sides of the grid-dependency wait.)
"""
import argparse
import os
import sys

import numpy as np

WORDS = 16
M62 = (1 << 62) - 1


def pct(a, qs=(10, 50, 90)):
    a = np.asarray(a)
    if not len(a):
        return "-"
    return " ".join(f"p{q} {np.percentile(a, q) / 1e3:5.2f}" for q in qs) + f" mean {a.mean() / 1e3:5.2f} (n={len(a)})"


def chain_pace(ti, ch, carry, ent):
    """Per tile, the time from each chunk's prefix out to the next's, and from each block's entry to
    the next's."""
    P = np.full((ti.max() + 1, ch.max() + 1), np.nan)
    P[ti, ch] = np.where(carry >= 0, carry, np.nan)
    E = np.full_like(P, np.nan)
    E[ti, ch] = ent
    dP, dE = np.diff(P, axis=1), np.diff(E, axis=1)
    print(f"  chain: prefix to prefix {pct(dP[~np.isnan(dP)])}; entry to entry {pct(dE[~np.isnan(dE)])}")


def analyze(tr, label):
    """Print a block's phases (us) from an (n, 16) int64 trace."""
    raw = lambda k: tr[:, k] & M62  # noqa: E731 (bit 63 of word 9 is a flag)
    t0 = raw(0).min()
    at = lambda k: np.where(raw(k) > 0, raw(k) - t0, -1)  # noqa: E731
    ent, land, carry, end, agg, p1, found, rep = (at(k) for k in (0, 4, 5, 6, 8, 9, 10, 11))
    p2, p3, fold, last = at(12), at(13), at(14), at(15)
    end = np.where(last >= 0, last, np.where(end >= 0, end, carry))
    missed = (tr[:, 9] >> 63) & 1
    depth = tr[:, 7] & 0xFFFFFFFF
    ch, ti = tr[:, 2], tr[:, 3]
    life = end - ent
    print(f"== {label}: {len(tr)} blocks, {ti.max() + 1} tiles x {ch.max() + 1} chunks, span {end.max() / 1e3:.1f} us, "
          f"{len(np.unique(tr[:, 1]))} SMs")
    print(f"  life {pct(life)}: loading {(land - ent).sum() / life.sum():.2f}, landed to prefix out "
          f"{(carry - land).sum() / life.sum():.2f}, after {(end - carry).sum() / life.sum():.2f}")
    G = int(os.environ.get("NANOSSM_TUNE_GROUP", "1"))
    if G > 1:
        analyze_grouped(G, ti, ch, ent, land, agg, carry, p1, found, rep, p2, missed, tr)
        return
    L = (p1 >= 0) & (agg >= 0) & (found >= 0) & (ch > 0)  # publishers that looked back
    if not L.any():
        print("  no block looked back: the chain's pace only")
        chain_pace(ti, ch, carry, ent)
        return
    print(f"  landed -> aggregate out {pct((agg - land)[L])}")
    ok = L & (fold >= 0)
    if ok.any():
        print(f"    of which: landed -> fold done {pct((fold - land)[ok])}; -> aggregate out {pct((agg - fold)[ok])}")
    ok = L & (p2 >= 0)
    if ok.any() and (last >= 0).any():  # (the first form has no word 15, and 12-13 meant else)
        print(f"  first -> second poll back {pct((p2 - p1)[ok])}; second -> third {pct((p3 - p2)[ok & (p3 >= 0)])}")
    print(f"  aggregate out -> first poll back {pct((p1 - agg)[L])}; first poll missed {missed[L].mean():.2f}")
    r = np.where(rep >= 0, rep, found)
    for d in range(3):
        m = L & (depth == d)
        if m.sum() >= 5:
            print(f"  walked back {d} ({m.sum() / L.sum():.2f}): first poll -> prefix found {pct((found - p1)[m])}; "
                  f"replay {pct((r - found)[m])}; -> prefix out {pct((carry - r)[m])}")
    print(f"  landed -> prefix out {pct((carry - land)[L])}")
    idx = {(c, t): i for i, (c, t) in enumerate(zip(ch, ti))}
    pred = np.array([idx.get((c - 1, t), -1) for c, t in zip(ch, ti)])
    has = L & (pred >= 0)
    p = pred[has]
    print(f"  the predecessor landed after me {(land[p] > land[has]).mean():.3f}; its aggregate came after my first "
          f"poll {(agg[p] > p1[has]).mean():.3f}, its prefix {(carry[p] > p1[has]).mean():.2f}; "
          f"dispatched before me by {pct(ent[has] - ent[p])}")
    # The chain (session 24): per tile, how fast the prefixes advance, how fast the blocks enter,
    # whether a hop waited on the predecessor's prefix or on the block's own aggregate, and how
    # long after the prefix it found was out the block found it.
    chain_pace(ti, ch, carry, ent)
    waits = L & (pred >= 0)
    waits[waits] = agg[waits] < carry[pred[waits]]
    print(f"  hops that waited on the predecessor's prefix (own aggregate out before it) {waits[L].mean():.2f}")
    j = ch - 1 - depth  # (the chunk whose prefix the walk found)
    src = np.array([idx.get((c, t), -1) for c, t in zip(j, ti)])
    for d in range(3):
        m = L & (depth == d) & (src >= 0)
        m[m] = carry[src[m]] >= 0  # (its prefix's time was taken)
        if m.sum() >= 5:
            print(f"  walked back {d}: its prefix out -> found {pct((found - carry[src])[m])}")


def analyze_grouped(G, ti, ch, ent, land, agg, carry, p1, found, formed, shares, missed, tr):
    """The grouped path (carries by groups of G chunks, NANOSSM_TUNE_GROUP=G): words 12 the group's
    earlier aggregates in (after the shares' barrier and sum), 9 the first poll of the group
    predecessor's prefix (bit 63: missed), 10 that prefix found, 7 its polls << 32, 11 the carry
    formed, 5 the block's own prefix out."""
    pos = ch % G
    M = (shares >= 0) & (found >= 0) & (agg >= 0) & (ch >= G)  # blocks that waited on a group prefix
    if not M.any():
        print("  no grouped carry traced (words 9-12 empty): an older probe, or not the grouped path")
        return
    polls = tr[:, 7] >> 32
    print(f"  G = {G}; blocks past the first group {M.sum()}")
    print(f"  landed -> aggregate out {pct((agg - land)[M])}")
    print(f"  aggregate out -> the group's aggregates in {pct((shares - agg)[M])}")
    for name, m in (("first of its group", M & (pos == 0)), ("later in its group", M & (pos > 0)),
                    ("its group's last", M & (pos == G - 1))):
        if m.sum() >= 5:
            print(f"    {name}: aggregate out -> aggregates in {pct((shares - agg)[m])}")
    print(f"  aggregates in -> group prefix found {pct((found - shares)[M])}; first poll missed "
          f"{missed[M].mean():.2f}; polls {pct(polls[M] * 1000)}")
    print(f"  prefix found -> carry formed {pct((formed - found)[M])}; -> own prefix out {pct((carry - formed)[M])}")
    print(f"  landed -> own prefix out {pct((carry - land)[M])}")
    idx = {(c, t): i for i, (c, t) in enumerate(zip(ch, ti))}
    src = np.array([idx.get((c - c % G - 1, t), -1) for c, t in zip(ch, ti)])
    m = M & (src >= 0)
    m[m] = carry[src[m]] >= 0
    if m.any():
        s = src[m]
        print(f"  group predecessor's prefix out -> found {pct(found[m] - carry[s])}; it came out after my "
              f"aggregates were in {(carry[s] > shares[m]).mean():.2f}")
        print(f"  dispatched after the group predecessor by {pct(ent[m] - ent[s])}")
    # the chain of group prefixes: per tile, the prefix-out times of each group's last chunk
    last = (pos == G - 1) & (carry >= 0)
    for t in np.unique(ti[last])[:1]:
        k = np.argsort(ch[last & (ti == t)])
        c = carry[last & (ti == t)][k]
        e = ent[last & (ti == t)][k]
        a = shares[last & (ti == t)][k]
        print(f"  tile {t}: group prefix to group prefix {pct(np.diff(c))}; the groups' last entries apart "
              f"{pct(np.diff(e))}; their aggregates in -> prefix out {pct((c - a)[a >= 0])}")


def run(kind, dtype_name, shape, reps=3):
    import torch
    import nanossm
    from nanossm import _call

    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[dtype_name]
    B, T, R, C = shape
    extra = 1 << 26
    size = torch.empty(0, dtype=dtype).element_size()
    vec = 16 // size
    if kind == "fwd" and size == 2 and B * R * C // 8 < 32:
        vec = 4  # (forwardPacketBytes: 8-byte packets fill the warp)
    if C % vec:
        vec = 1  # (single-channel lanes, vectorWidth)
    cv = C // vec
    if kind == "fwd":
        tiles = -(-B * R * cv // 32)
    elif cv <= 32:
        tiles = -(-B * R // (32 // cv))  # (the backward: whole rows per tile)
    else:
        raise SystemExit(f"trace_probe: a backward with C / VEC = {cv} > 32 has dA partial sums where the trace goes")
    chunks = -(-T // (128 if kind == "fwd" else 64))
    # (the trace's offset: the look-back slots of a plan of 8-warp blocks over 16-byte packets)
    off = 2 * (-(-chunks * tiles * 32 * vec * 4 // 256) * 256)
    keep = {}

    def attach(buf, at, need, device):
        ws = torch.empty(need + extra, dtype=torch.uint8, device=device)
        ws[off:].zero_()
        _call._OPT_WS.pack_into(buf, at, ws.data_ptr(), need + extra)
        keep["ws"] = ws
        return ws

    _call._attach_workspace = attach
    torch.manual_seed(0)
    A = torch.cumsum(-0.05 * torch.rand(B, T, R, device="cuda"), dim=1)
    x = torch.randn(B, T, R, C, device="cuda", dtype=dtype, requires_grad=kind == "bwd")
    g = torch.randn_like(x)
    for _ in range(reps + 1):
        out = nanossm.ssm_scan(A, x)
        if kind == "bwd":
            out.backward(g)  # (the last workspace is the backward's)
        torch.cuda.synchronize()
    tr = keep["ws"][off:off + extra].view(torch.int64).cpu().numpy().reshape(-1, WORDS)
    return tr[tr[:, 0] != 0].copy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cases", nargs="*", help="KIND:DTYPE:B,T,R,C (kind fwd or bwd; dtype f32, bf16, f16)")
    ap.add_argument("--analyze", nargs="*", default=[], help="saved .npy traces to analyse instead")
    ap.add_argument("--save", default=os.environ.get("OUT", ""), help="folder for the traces (default: $OUT)")
    args = ap.parse_args(argv)
    for f in args.analyze:
        analyze(np.load(f), os.path.basename(f))
    if args.cases:
        os.environ.setdefault("NANOSSM_TUNE_GROUP", "1")
        os.environ.setdefault("NANOSSM_TUNE_PASSES", "1")
        knobs = [k for k in ("NANOSSM_TUNE_WARPS", "NANOSSM_TUNE_FWD_STEPS", "NANOSSM_TUNE_BWD_STEPS") if os.environ.get(k)]
        if knobs:
            raise SystemExit(f"trace_probe: {', '.join(knobs)} set: the trace's offset assumes 8-warp blocks")
    for case in args.cases:
        kind, dt, shape = case.split(":")
        shape = tuple(int(v) for v in shape.split(","))
        tr = run(kind, dt, shape)
        label = f"{kind} {dt} {','.join(map(str, shape))}"
        analyze(tr, label)
        if args.save:
            os.makedirs(args.save, exist_ok=True)
            np.save(os.path.join(args.save, f"trace_{kind}_{dt}_{'_'.join(map(str, shape))}.npy"), tr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
