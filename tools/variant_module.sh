#!/usr/bin/env bash
# Build one kernel-module variant for timing on the GPU machine through NANOSSM_MODULE, without
# rebuilding the library: sm_90 only, with -lineinfo (for tools/ncu_source.sh), ~30 s here.
#   tools/variant_module.sh NAME [--patch FILE] [nvcc flags, e.g. -DNANOSSM_FWD16_MIN_BLOCKS=3]
# -> build/var_NAME.fatbin, then prints each scan kernel's registers and spills and the staging
# check (tools/sass_check.py). A patch is applied to a copy of kernels/, never to the tree.
# On the GPU machine: NANOSSM_MODULE=$PWD/build/var_NAME.fatbin (an absolute path: tests run
# child processes in other folders), carried with `carry: ["build/var_NAME.fatbin"]`.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
src=kernels
if [ "${1:-}" = --patch ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  cp -r kernels "$tmp/kernels"; (cd "$tmp" && patch -p1 -s < "$OLDPWD/$2"); src=$tmp/kernels; shift 2
fi
NVCC=.venv/lib/python3.11/site-packages/nvidia/cu13/bin/nvcc
mkdir -p build
"$NVCC" -fatbin -O3 -std=c++17 -lineinfo -Xptxas -v -gencode arch=compute_90,code=sm_90 "$@" \
  -o "build/var_$name.fatbin" "$src/scan.cu" 2>&1 |
  awk '/Compiling entry function/ { match($0, /nanossm_[a-z0-9_]+/); k = substr($0, RSTART, RLENGTH) }
       /bytes spill stores/ { split($0, a, " "); st = a[5]; ld = a[9] }
       /Used [0-9]+ registers/ && k ~ /scan_(fwd|bwd)/ { match($0, /Used [0-9]+/); printf "%-36s %s, spills %s/%s bytes\n", k, substr($0, RSTART, RLENGTH) " registers", st, ld; k = "" }' | sort
.venv/bin/python tools/sass_check.py "build/var_$name.fatbin" | tail -1
echo "build/var_$name.fatbin"
