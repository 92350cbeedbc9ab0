"""The backward and packed-sequence benchmarks of `python -m nanossm.bench` (--backward, --packed).

Backward: the fused library call alone (dx, dA from x, out, g: reads three tensors, writes one),
against the copy of x (its floor is two copies) and against torch.addcmul (PyTorch's elementwise
kernel moving the same bytes: three reads, one write); and a training step (forward + backward through
autograd) against the einsum baseline's forward alone. Packed: B sequences of T steps packed as
(1, B*T, R, C) with cu_seqlens, equal and uneven lengths and one sequence of 90% of the tokens
(without and with max_seqlen, the plan's hint), against the plain (B,T,R,C) scan; and
the fused backward of the equal pack against the plain one's (no states: the lean kernels).
Median times with a cold L2, like bench.py (with --timing graph, the library's calls, the copy and
addcmul by CUDA-graph replay; the training step and the einsum baseline always by events). Not a
test: no pass/fail.
"""
import torch

from . import ssm_scan
from .bench import DTYPES, bench_ms, copy_ms
from ._call import _launch_backward
from .reference import rel_err, ssm_scan_backward64, ssm_scan_einsum


def _inputs(shape, dtype, seed=0):
    B, T, R, C = shape
    g = torch.Generator(device="cuda").manual_seed(seed)
    A = torch.cumsum(-0.2 * torch.rand(B, T, R, device="cuda", generator=g), dim=1)
    x = torch.randn(B, T, R, C, device="cuda", generator=g).to(dtype)
    return A, x


def bench_backward(shapes, dtypes):
    rows = []
    for dname in dtypes:
        dtype = DTYPES[dname]
        for shape in shapes:
            A, x = _inputs(shape, dtype)
            out = ssm_scan(A, x)
            grad = torch.randn_like(x)
            dx, dA = torch.empty_like(x), torch.empty_like(A)
            dst = torch.empty_like(x)
            row = {"shape": shape, "dtype": dname}
            row["copy"] = copy_ms(x, dst)
            row["backward"] = bench_ms(lambda: _launch_backward(A, x, out, grad, dx, dA, None, None, None, None, False))
            row["err_dx"], row["err_dA"] = _backward_errors(A, x, grad, dx, dA)
            # the same traffic in PyTorch's own elementwise kernel (read three tensors, write one)
            row["elementwise_3r1w"] = bench_ms(lambda: torch.addcmul(x, out, grad, out=dst))
            xs, As = x.clone().requires_grad_(), A.clone().requires_grad_()

            def step():
                ssm_scan(As, xs).backward(grad)
            row["fwd+bwd"] = bench_ms(step, graph=False)  # (autograd: timed by events)
            row["forward"] = bench_ms(lambda: ssm_scan(A, x))
            B, T, R, C = shape
            if B * T * T * R * 4 <= 40e9:
                row["einsum_fwd"] = bench_ms(lambda: ssm_scan_einsum(A, x), graph=False)
            rows.append(row)
            extra = f"  einsum fwd {row['einsum_fwd']:.3f} ms" if "einsum_fwd" in row else ""
            print(f"{dname:>4} {str(shape):>20}  copy {row['copy']:.4f}  backward {row['backward']:.4f} ms "
                  f"(/copy {row['backward'] / row['copy']:.2f})  addcmul 3r1w {row['elementwise_3r1w']:.4f} "
                  f"(/copy {row['elementwise_3r1w'] / row['copy']:.2f})  forward {row['forward']:.4f}  "
                  f"train step fwd+bwd {row['fwd+bwd']:.4f} ms  err dx {row['err_dx']:.1e} dA {row['err_dA']:.1e}{extra}")
    return rows


def _backward_errors(A, x, g, dx, dA):
    """The timed call's dx and dA against float64 (reference.ssm_scan_backward64): dx relative to
    its norm, dA relative to the size of the terms it sums (g * out and x * dx cancel in it)."""
    dxr, dAr, outr = ssm_scan_backward64(A, x, g)
    scale = ((g.double() * outr).abs() + (x.double() * dxr).abs()).sum(-1).norm()
    return rel_err(dx, dxr), ((dA.double() - dAr).norm() / torch.maximum(dAr.norm(), scale)).item()


def skewed_offsets(B, T, share=0.9, device="cuda"):
    """cu_seqlens of B sequences over B*T tokens, the middle one holding `share` of them and the
    others the rest in equal parts (the last takes the remainder); and the longest's length."""
    n = B * T
    big = int(share * n)
    rest = (n - big) // (B - 1)
    lengths = [rest] * (B // 2) + [big] + [rest] * (B - 1 - B // 2)
    lengths[-1] += n - sum(lengths)
    cu = torch.tensor([0, *lengths], dtype=torch.int64).cumsum(0).to(device=device, dtype=torch.int32)
    return cu, max(lengths)


def bench_packed(shapes, dtypes):
    rows = []
    for dname in dtypes:
        dtype = DTYPES[dname]
        for shape in shapes:
            B, T, R, C = shape
            if B < 2:
                continue
            A, x = _inputs(shape, dtype)
            plain = bench_ms(lambda: ssm_scan(A, x))
            # the same tokens packed: B equal sequences, then B uneven ones (1 .. ~2T)
            Ap = A.reshape(1, B * T, R)  # without initial states only differences within a sequence matter
            xp = x.reshape(1, B * T, R, C)
            equal = torch.arange(0, B * T + 1, T, device="cuda", dtype=torch.int32)
            g = torch.Generator().manual_seed(1)
            cuts = torch.sort(torch.randint(1, B * T, (B - 1,), generator=g)).values.tolist()
            uneven = torch.tensor([0, *cuts, B * T], device="cuda", dtype=torch.int32)
            row = {"shape": shape, "dtype": dname, "plain": plain}
            for name, cu in (("packed_equal", equal), ("packed_uneven", uneven)):
                row[name] = bench_ms(lambda: ssm_scan(Ap, xp, cu_seqlens=cu))
            # one sequence of 90% of the tokens (the plan cannot see it in GPU offsets), without
            # and with max_seqlen, the hint that lets the plan split it (v85)
            skewed, longest = skewed_offsets(B, T)
            row["packed_skewed"] = bench_ms(lambda: ssm_scan(Ap, xp, cu_seqlens=skewed))
            row["packed_skewed_hint"] = bench_ms(
                lambda: ssm_scan(Ap, xp, cu_seqlens=skewed, max_seqlen=longest))
            # with initial and final states (the packed kernels with their code): against the plain
            # scan with states
            h0 = torch.randn(B, R, C, device="cuda")
            row["plain_states"] = bench_ms(lambda: ssm_scan(A, x, initial_state=h0, return_final_state=True))
            row["packed_states"] = bench_ms(
                lambda: ssm_scan(Ap, xp, cu_seqlens=equal, initial_state=h0, return_final_state=True))
            ref = ssm_scan(A, x).reshape(1, B * T, R, C)
            row["err_equal"] = rel_err(ssm_scan(Ap, xp, cu_seqlens=equal), ref)  # no h0: offsets of A cancel
            # the fused backward (no states), plain against packed in equal lengths
            out, grad = ssm_scan(A, x), torch.randn_like(x)
            dx, dA = torch.empty_like(x), torch.empty_like(A)
            row["bwd_plain"] = bench_ms(lambda: _launch_backward(A, x, out, grad, dx, dA, None, None, None, None, False))
            outp, gp, dxp, dAp = (t.reshape(1, B * T, *t.shape[2:]) for t in (out, grad, dx, dA))
            row["bwd_packed_equal"] = bench_ms(
                lambda: _launch_backward(Ap, xp, outp, gp, dxp, dAp, None, None, None, equal, False))
            rows.append(row)
            print(f"{dname:>4} {str(shape):>20}  plain {plain:.4f} ms  packed equal {row['packed_equal']:.4f} "
                  f"({row['packed_equal'] / plain:.3f}x)  packed uneven {row['packed_uneven']:.4f} "
                  f"({row['packed_uneven'] / plain:.3f}x)  skewed {row['packed_skewed'] / plain:.3f}x "
                  f"(max_seqlen {row['packed_skewed_hint'] / plain:.3f}x)  with states {row['plain_states']:.4f} "
                  f"packed {row['packed_states']:.4f} ({row['packed_states'] / row['plain_states']:.3f}x)  "
                  f"err {row['err_equal']:.1e}  backward plain "
                  f"{row['bwd_plain']:.4f} packed equal {row['bwd_packed_equal']:.4f} "
                  f"({row['bwd_packed_equal'] / row['bwd_plain']:.3f}x)")
    return rows
