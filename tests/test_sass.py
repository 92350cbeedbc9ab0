"""The compiled module's machine code (tools/sass_check.py): every 16-byte-packet scan kernel
issues its copies back to back, with no instruction between them that waits on a global load,
and spills no register. Needs no GPU: it reads the sm_90 code of kernels/scan.fatbin."""
import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import sass_check  # noqa: E402

MODULE = os.path.join(HERE, "..", "kernels", "scan.fatbin")


@pytest.fixture(scope="module")
def found():
    sass = sass_check.disassemble(MODULE)
    assert sass is not None, "cuobjdump/nvdisasm not found (requirements.txt installs them into nvidia/cu13/bin)"
    return sass_check.kernels(sass)


def test_every_packet_kernel_is_checked(found):
    # forward and backward, plain and packed (with states, and without: nostate), f32 (v4) and
    # f16/bf16 (v8); the plain forward's 8-byte f16/bf16 packets (v4), the forward with carries
    # by groups over 4-channel lanes (grouped_{f32,f16,bf16}_v4), the backward with them
    # (grouped_f32_v4, grouped_{f16,bf16}_v8) and with its late copies (late_*, v73); the long-chunk
    # kernels (session 29: grouped_long_{f16,bf16}_v4, bwd_late_long_f32_v4; session 30:
    # fwd_long_{f16,bf16}_v8; session 33: fwd_packed_long_{f16,bf16}_v8 and
    # fwd_packed_nostate_long_{f16,bf16}_v8)
    assert len(found) == 38, sorted(found)
    assert all(any("LDGSTS" in r for r in rows) for rows in found.values())


@pytest.mark.parametrize("kind", ["fwd", "fwd_packed", "bwd", "bwd_packed"])
def test_no_load_is_consumed_between_the_copies(found, kind):
    names = [n for n in found if n.startswith(f"nanossm_scan_{kind}_") and n.count("packed") == kind.count("packed")]
    assert len(names) == {"fwd": 12, "fwd_packed": 10, "bwd": 10, "bwd_packed": 6}[kind]
    for name in names:
        bad = sass_check.early_consumers(found[name])
        assert not bad, f"{name}: " + "; ".join(f"{i}: {r}" for i, r in bad[:3])


def test_only_the_late_kernels_copy_after_the_carry(found):
    """v73 (core/plan_heuristics.go lateXY): the late backward kernels (bwd_late_f32_v4,
    bwd_late_{f16,bf16}_v8, bwd_late_long_f32_v4), and since v74 the grouped backward kernels
    (bwd_grouped_f32_v4, bwd_grouped_{f16,bf16}_v8), issue their copies of x and out after the carry, past the first wait
    for copies; no other kernel copies after that wait (the plain ones keep their machine code)."""
    late = sorted(n for n, rows in found.items() if any("LDGSTS" in r for r in rows[sass_check.phase1_end(rows):]))
    assert late == ["nanossm_scan_bwd_grouped_bf16_v8", "nanossm_scan_bwd_grouped_f16_v8", "nanossm_scan_bwd_grouped_f32_v4",
                    "nanossm_scan_bwd_late_bf16_v8", "nanossm_scan_bwd_late_f16_v8", "nanossm_scan_bwd_late_f32_v4",
                    "nanossm_scan_bwd_late_long_f32_v4"], late


@pytest.mark.parametrize("kind", ["fwd", "bwd"])
def test_no_packet_kernel_spills(found, kind):
    for name, rows in found.items():
        if name.startswith(f"nanossm_scan_{kind}_"):
            assert not sass_check.spills(rows), f"{name}: {sass_check.spills(rows)[:3]}"


def test_backward_waits_for_g_before_x_and_out(found):
    """v40: the backward's copies go out in two groups, g's (after the A table's) and then x's and
    out's; phase 1 waits for the first only (DEPBAR.LE SB0, 0x1: all but the newest group), phase 3
    for all. The forward has one group. (f32 8,2048,64,64 backward 2.20 -> 2.04 of the copy,
    docs/performance.md v40.)"""
    for name, rows in found.items():
        marks = [(i, r.split()[0] if "LDGDEPBAR" in r else r.strip()) for i, r in enumerate(rows) if "DEPBAR" in r]
        kinds = [k for _, k in marks]
        if name.startswith("nanossm_scan_bwd_"):
            assert kinds[:3] == ["LDGDEPBAR", "LDGDEPBAR", "DEPBAR.LE SB0, 0x1"], f"{name}: {kinds}"
            assert kinds[-1] == "DEPBAR.LE SB0, 0x0", f"{name}: {kinds}"
            first, second = marks[0][0], marks[1][0]
            g = sum("LDGSTS" in r for r in rows[:first])
            xo = sum("LDGSTS" in r for r in rows[first:second])
            assert xo > 0 and xo % 2 == 0 and xo <= 2 * g, f"{name}: {g} copies in the first group, {xo} in the second"
        else:
            assert "DEPBAR.LE SB0, 0x1" not in kinds, f"{name}: {kinds}"


def test_the_check_sees_a_consumer():
    rows = ["LDG.E.CONSTANT R5, desc[UR4][R2.64]", "LDGSTS.E.BYPASS.128 [R8], desc[UR4][R6.64], P0",
            "@P4 FADD R5, -R5, -RZ", "LDGSTS.E.BYPASS.128 [R8+0x200], desc[UR4][R10.64], P0"]
    assert sass_check.early_consumers(rows) == [(2, "@P4 FADD R5, -R5, -RZ")]
    rows[2] = "FADD R7, R9, -RZ"
    assert sass_check.early_consumers(rows) == []
    assert sass_check.spills(["STL [R1+0x4], R5", "@P0 LDL.LU R2, [R1]", "STS [R2], R3"]) == [
        "STL [R1+0x4], R5", "@P0 LDL.LU R2, [R1]"]
    # a load counts as landed once the value of a load issued after it has been used
    rows = ["LDG.E.CONSTANT R5, desc[UR4][R2.64]", "LDG.E R6, desc[UR4][R4.64]", "ISETP.GE.AND P0, PT, R6, RZ, PT",
            "LDGSTS.E.BYPASS.128 [R8], desc[UR4][R12.64], P0", "FSEL R5, -R5, R5, P1",
            "LDGSTS.E.BYPASS.128 [R8+0x200], desc[UR4][R10.64], P0"]
    assert sass_check.early_consumers(rows) == []
    rows[2] = "ISETP.GE.AND P0, PT, R7, RZ, PT"
    assert sass_check.early_consumers(rows) == [(4, "FSEL R5, -R5, R5, P1")]


def _static_shared_sm90():
    """{kernel: static shared memory bytes} of the sm_90 code (cuobjdump -res-usage)."""
    out = subprocess.run([sass_check.tool("cuobjdump"), "-res-usage", MODULE], capture_output=True, text=True,
                         check=True).stdout
    shared, arch, name = {}, None, None
    for line in out.splitlines():
        if m := re.match(r"\s*arch = (sm_\d+)", line):
            arch = m.group(1)
        elif m := re.match(r"\s*Function (\w+):", line):
            name = m.group(1)
        elif (m := re.search(r"\bSHARED:(\d+)", line)) and arch == "sm_90":
            shared[name] = int(m.group(1))
    return shared


def test_fp32_forward_kernels_fit_three_blocks_per_sm():
    """The fp32 forward kernels stage 64 KB per block and run at 3 blocks per SM (80 registers,
    kernels/scan.cu): their static shared memory must leave room for 3 on an H100/H200 (228 KB
    per SM; cuobjdump's sm_90 figure includes the 1 KB the driver reserves per block). The packed
    one with states fell to 2 blocks at 1 KB more and took 1.20x the plain scan's time instead of
    1.08x (docs/performance.md, v32)."""
    shared = _static_shared_sm90()
    names = ["nanossm_scan_fwd_f32_v4", "nanossm_scan_fwd_grouped_f32_v4", "nanossm_scan_fwd_packed_f32_v4",
             "nanossm_scan_fwd_packed_nostate_f32_v4"]
    for name in names:
        assert 3 * (65536 + shared[name]) <= 228 * 1024, f"{name}: {shared[name]} bytes of static shared memory"


@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_one_warp_looks_back_and_hands_the_carry_on(arch):
    """v67-v68: the block's last warp alone looks back and hands the carry to the other warps over
    named barrier 1 (BAR.ARV by it, BAR.SYNC by them: carries.cuh hand_carry), in the plain
    kernels, the packed backwards and the packed forwards without states over 4- or 8-channel
    lanes; v70: the grouped path's narrow form hands its group carry on the same way, in the
    grouped kernels and in the 16-bit forwards over 8-channel lanes (which have both paths: two
    hand-overs); v72: the 16-bit packed forwards with states over 8-channel lanes. Not in the fp32
    packed forward with states or the packed forwards over single channels, where every warp that
    needs the carry looks back (see kOneLooker). Session 24: plain backward f32 8,2048,64,64
    2.11 -> 2.01 of the copy, bf16 2.49 -> 2.17; session 25: packed bf16 2,1024 equal 1.26 -> 1.15
    of the plain kernel; session 26: with states 1.33 -> 1.24. Every scan kernel, single-channel
    lanes (v1) included, in both architectures' code. (The machine code shows the hand-over, not which warp looks back.)"""
    sass = sass_check.disassemble(MODULE, arch)
    assert sass is not None
    handing = []
    for name, rows in sass_check.kernels(sass, "1|4|8").items():
        arrive = sum(bool(re.search(r"BAR\.ARV 0x1,", r)) for r in rows)
        wait = sum(bool(re.search(r"BAR\.SYNC\S* 0x1,", r)) for r in rows)
        fwd_packed = "_fwd_packed_" in name
        fp32_states = "nostate" not in name and "_f32_" in name
        want = 0 if fwd_packed and (fp32_states or name.endswith("_v1")) else 1
        if re.fullmatch(r"nanossm_scan_fwd_(long_)?b?f16_v8", name):
            want = 2  # (look-back's hand-over and the group path's)
        assert arrive == want and wait == want, f"{arch} {name}: arrive {arrive}, wait {wait}, expected {want}"
        handing += [name] * (want > 0)
    # plain: fwd f32_v{1,4}, {f16,bf16}_v{1,4,8}; bwd f32_v{1,4}, {f16,bf16}_v{1,8} (14);
    # packed bwd, with and without states (12); packed fwd without states f32_v4, {f16,bf16}_v8,
    # with states {f16,bf16}_v8 (5); grouped fwd {f32,f16,bf16}_v4, bwd f32_v4, {f16,bf16}_v8 (6);
    # late bwd f32_v4, {f16,bf16}_v8 (3); long: grouped fwd {f16,bf16}_v4, late bwd f32_v4,
    # fwd {f16,bf16}_v8 (5); packed fwd {f16,bf16}_v8 with and without states (4)
    assert len(handing) == 49, sorted(handing)
