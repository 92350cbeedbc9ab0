#!/usr/bin/env bash
# Prepared in session 34, NOT RUN: v87, the 16-bit plain backward over 4-channel lanes (8-byte
# packets) where 8-channel lanes leave half a warp idle (bf16 1,262144,4,32: 16 lanes, 5.50x the
# copy). Here first: `git apply docs/experiments/v87-bwd16-8byte-packets.patch && make kernels lib
# test-c` (two new kernels, 98 registers, no spills; test_sass and the Go tests pass with it), then
# on the GPU machine (carry python/nanossm/_lib):
#  1. the backward tests (their odd 16-bit shapes take the new kernels: C % 4 == 0 and
#     B*R*C/8 < 32 lanes);
#  2. the backward, default (v87: 8-byte packets) against NANOSSM_TUNE_BWD16_BYTES=16 (before),
#     same run, on shapes of 16 lanes and fewer and one of full warps (unchanged by the rule).
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
echo "== backward tests"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_backward.py tests/test_plans.py -k "not grouped and not long_chunks and not segments" 2>&1 | tail -2
for bytes in "" 16; do
  echo "== bench --backward, NANOSSM_TUNE_BWD16_BYTES=${bytes:-default}"
  NANOSSM_TUNE_BWD16_BYTES=$bytes python3 -m nanossm.bench --backward --no-baselines --dtypes bf16,f16 \
    --shapes "1,262144,4,32;2,262144,2,32;1,65536,8,16;8,2048,64,64" --plot /dev/null 2>&1 | grep -v "^device"
done
