#!/usr/bin/env bash
# Session 33, call 2: the suite's last files (call 1's run of the whole suite passed everything up
# to them within its time limit), then `bench --packed` with the packed long 16-bit forward
# (default plans) and without (NANOSSM_TUNE_LONG=1: the module's chunks everywhere, the plain
# forward included, so compare the packed ms), on the default shapes and on packs of few tiles.
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
echo "== pytest (the rest)"
timeout 200 python3 -m pytest -q -rs tests/test_sequences.py tests/test_torch_op.py 2>&1 | tail -3
few="4,16384,4,64;8,4096,8,64;16,2048,16,32"
for dt in bf16 f16; do
  for long in "" 1; do
    echo "== bench --packed $dt LONG=${long:-default}"
    NANOSSM_TUNE_LONG=$long python3 -m nanossm.bench --packed --dtypes $dt --plot /dev/null 2>&1 | tee -a "$OUT/packed_$dt${long:+_long1}.log" | grep -v "^device"
    NANOSSM_TUNE_LONG=$long python3 -m nanossm.bench --packed --dtypes $dt --shapes "$few" --plot /dev/null 2>&1 | tee -a "$OUT/packed_$dt${long:+_long1}.log" | grep -v "^device"
  done
done
