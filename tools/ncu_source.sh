#!/usr/bin/env bash
# Where a kernel's time goes, per CUDA source line (GPU machine; carry python/nanossm/_lib and a
# module built with -lineinfo, e.g. build/var_li.fatbin):
#   NANOSSM_MODULE=build/var_li.fatbin bash tools/ncu_source.sh NAME B,T,R,C [f32|bf16] [bwd] [kernel-regex]
# Writes $OUT/NAME.ncu-rep, $OUT/NAME.details.txt (speed of light, occupancy, warp states),
# $OUT/NAME.source.csv (warp-state samples per source line) and $OUT/NAME.sass.csv (per SASS
# instruction).
set -u
name=$1 shape=$2 dt=${3:-f32} mode=${4:-} k=${5:-regex:nanossm_scan}
export PYTHONPATH=python
OUT=${OUT:-/tmp/nanossm-out}; mkdir -p "$OUT"
ncu --set full --import-source yes --source-folders kernels --clock-control none -k "$k" -s 2 -c 1 \
  -f -o "$OUT/$name" python3 tools/profile_one.py "$shape" "$dt" 3 $mode > "$OUT/$name.log" 2>&1
ncu -i "$OUT/$name.ncu-rep" --page details > "$OUT/$name.details.txt" 2>&1
ncu -i "$OUT/$name.ncu-rep" --page source --csv --print-source cuda > "$OUT/$name.source.csv" 2>&1 ||
  ncu -i "$OUT/$name.ncu-rep" --page source --csv > "$OUT/$name.source.csv" 2>&1
# The CUDA view lists the kernel's top file only (kernels/scan.cu, whose lines hold no samples: the
# code is inlined from the .cuh files, session 16), so keep the SASS view too, with its samples
# per instruction; map them to source lines with `nvdisasm -g` on the module (v12's method).
ncu -i "$OUT/$name.ncu-rep" --page source --csv --print-source sass > "$OUT/$name.sass.csv" 2>&1
grep -E "Duration|DRAM Throughput|Achieved Occupancy|Registers Per|Block Limit|Issue Slots Busy|Warp Cycles Per Issued" "$OUT/$name.details.txt" | head -12
