"""Which kernels of two modules (fatbins) have the same machine code: each function's SASS,
per architecture, with addresses, encodings and labels' numbering as cuobjdump prints them, the
instruction text compared. A refactor that leaves every function equal needs no new GPU run (its
code already ran); the functions it lists as different do. Not a test.
usage: .venv/bin/python tools/sass_same.py NEW.fatbin OLD.fatbin
(e.g. OLD from `git show REV:kernels/scan.fatbin > /tmp/old.fatbin`)"""
import hashlib
import re
import subprocess
import sys

from sass_check import tool  # (cuobjdump from PATH or the pip wheels, as test_sass finds it)


def functions(path):
    """{(arch, function): digest of its instruction text}"""
    out = subprocess.run([tool("cuobjdump"), "-sass", path], capture_output=True, text=True, check=True).stdout
    res, arch, name, body = {}, None, None, []

    def close():
        if name:
            res[(arch, name)] = hashlib.sha256("\n".join(body).encode()).hexdigest()

    for line in out.splitlines():
        m = re.search(r"arch = (sm_\d+)", line)
        if m:
            arch = m.group(1)
        m = re.search(r"Function : (\S+)", line)
        if m:
            close()
            name, body = m.group(1), []
            continue
        m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(.*?);", line)
        if m and name:
            body.append(m.group(1).strip())
    close()
    return res


def main():
    if not tool("cuobjdump"):
        sys.exit("sass_same: no cuobjdump on PATH or in the nvidia wheels (make setup; run with .venv/bin/python)")
    new, old = functions(sys.argv[1]), functions(sys.argv[2])
    same = sorted(k for k in new if old.get(k) == new[k])
    differ = sorted(k for k in new if k in old and old[k] != new[k])
    print(f"{len(same)} functions the same, {len(differ)} differ, {len(set(new) - set(old))} only in the first, "
          f"{len(set(old) - set(new))} only in the second")
    for arch, name in differ:
        print(f"  differs: {arch} {name}")
    for arch, name in sorted(set(new) ^ set(old)):
        print(f"  in one only: {arch} {name}")


if __name__ == "__main__":
    main()
