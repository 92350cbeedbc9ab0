"""Static check of the scan kernels' staging order in the compiled module (no GPU needed).

GPUs issue in order: an instruction that reads a register a global load is still filling stalls
its warp, and every instruction after it waits too. The staging loop of kernels/scan_kernel.cuh
issues a thread's 16 (forward) or 8 x 3 (backward) asynchronous copies back to back; a consumer
of a load placed between two copies turns them into a series of memory round trips (v10 had one
per step: 41% of the forward's stall samples, see docs/performance.md v12). This script
disassembles the sm_90 code of every packet scan kernel (16-byte, and the 16-bit forward's 8-byte) and reports any instruction
between the first and the last copy (LDGSTS) that reads a register written by a global load,
and any spill to local memory (STL/LDL: the 16-bit forward's spilled decays were reloaded in
its replay loop, 9.7% of its stall samples, before it moved to 2 blocks per SM).

usage: python tools/sass_check.py [module.fatbin]   (exit 1 when a kernel has such a consumer)
Needs cuobjdump and nvdisasm: from PATH, or from the nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm
wheels (requirements.txt), which put them beside the pip-installed nvcc in nvidia/cu13/bin.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

LOAD = re.compile(r"\bLDG\.E[.\w]*\s+(R\d+)")
REG = re.compile(r"(?<![\w.])R(\d+)")


def tool(name):
    found = shutil.which(name)
    if found:
        return found
    import importlib.util
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        cand = os.path.join(root, "cu13", "bin", name)
        if os.path.exists(cand):
            return cand
    return None


def disassemble(module, arch="sm_90"):
    """The module's machine code for one architecture (its first cubin of it), as nvdisasm prints
    it, or None without the tools or that code."""
    cuobjdump, nvdisasm = tool("cuobjdump"), tool("nvdisasm")
    if not (cuobjdump and nvdisasm):
        return None
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([cuobjdump, "-xelf", "all", os.path.abspath(module)], cwd=d, check=True,
                       capture_output=True)
        cubins = glob.glob(os.path.join(d, f"*{arch}*.cubin"))
        if not cubins:
            return None
        return subprocess.run([nvdisasm, cubins[0]], check=True, capture_output=True, text=True).stdout


def kernels(sass, widths="4|8"):
    """{name: [instruction text, ...]} for the packet scan kernels (v4, v8: 16-byte, or 8-byte for
    16-bit v4), or those of the given widths (e.g. "1|4|8": with the single-channel ones)."""
    out = {}
    for m in re.finditer(rf"\.text\.(nanossm_scan_\w+_v(?:{widths})):(.*?)(?=\n\s*\.section|\Z)", sass, re.S):
        out[m.group(1)] = [i.group(1).strip() for i in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(.*?);", m.group(2))]
    return out


def phase1_end(rows):
    """The index of a kernel's first wait for its copies (DEPBAR), or len(rows): phase 1's copies
    come before it; the backward's late copies of x and out (v73, v74) after it."""
    return next((i for i, r in enumerate(rows) if re.search(r"(^|\s)DEPBAR", r)), len(rows))


def early_consumers(rows):
    """Instructions between the first and last LDGSTS of phase 1 that read a register a global
    load wrote (and nothing has overwritten since). A load counts as landed once an instruction
    has used the value of a load issued after it (a warp's global loads return about in the order
    they were issued): the packed kernels load A before their walk of cu_seqlens, whose dependent
    loads are used before the copies, and ptxas places the A values' first uses among them.
    Phase 1's copies are those before the first wait for copies (DEPBAR): the backward's late
    copies of x and out (the bwd_late_* kernels, v73) are issued after the carry, which consumes loads."""
    copies = [i for i, r in enumerate(rows[:phase1_end(rows)]) if "LDGSTS" in r]
    if not copies:
        return []
    def written(op, first):  # the registers an instruction's destination covers (.64: a pair)
        width = 4 if ".128" in op else 2 if ".64" in op else 1
        return [str(int(first) + k) for k in range(width)]

    pending, bad = {}, []
    for i, r in enumerate(rows[:copies[-1]]):
        body = re.sub(r"^@!?U?P\w+\s+", "", r)
        op = body.split()[0] if body.split() else ""
        regs = REG.findall(body.split(None, 1)[1]) if len(body.split()) > 1 else []
        if LOAD.search(body):
            for reg in written(op, regs[0]):
                pending[reg] = i
            continue
        stores = op.startswith(("ST", "LDGSTS", "RED", "ATOM"))
        # the destination is the first operand when it is a register (ISETP and the like write
        # a predicate: every register they name is a source), or SHFL's after its predicate
        operands = [o.strip() for o in body.split(None, 1)[1].split(",")] if len(body.split()) > 1 else [""]
        first = operands[1] if op.startswith("SHFL") and len(operands) > 1 else operands[0]
        dest = not stores and re.match(r"R\d+", first) is not None
        srcs = regs[1:] if dest else regs
        if i > copies[0]:
            bad += [(i, r)] if any(s in pending for s in srcs) else []
        used = [pending[s] for s in srcs if s in pending]
        if used:  # that load has landed, and every load issued before it
            pending = {k: j for k, j in pending.items() if j > max(used)}
        if dest:
            for reg in written(op, regs[0]):
                pending.pop(reg, None)
    return bad


# No packet kernel spills since v32. The packed fp32 forward kept a few values in local memory
# until then (35 spill instructions with states, 4 without, outside its step loops, allowed here
# by name); its starts and ends in rolled loops, its decays taken again after the look-back and a
# 32-bit offset into the state rows left it none (docs/performance.md, v32).
def spills(rows):
    """The local-memory stores and loads (register spills) of a kernel."""
    return [r for r in rows if re.match(r"(@!?P\w+\s+)?(STL|LDL)\b", r)]


def main():
    module = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "kernels", "scan.fatbin")
    sass = disassemble(module)
    if sass is None:
        print("sass_check: cuobjdump/nvdisasm or sm_90 code not found")
        return 2
    found = kernels(sass)
    failed = 0
    for name, rows in sorted(found.items()):
        bad, spilled = early_consumers(rows), spills(rows)
        failed += bool(bad or spilled)
        print(f"{name}: {len(bad)} early consumers, {len(spilled)} spill instructions"
              + "".join(f"\n    {i}: {r}" for i, r in bad[:4]))
    print(f"sass_check: {len(found)} kernels, {failed} with a consumer between their copies or a spill")
    return 1 if failed or not found else 0


if __name__ == "__main__":
    sys.exit(main())
