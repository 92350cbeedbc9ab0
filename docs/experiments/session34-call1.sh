#!/usr/bin/env bash
# Session 34, call 1 (prepared in session 33, not run). Build here first: make lib test-c and
# tools/variant_module.sh li (a -lineinfo module for ncu); carry python/nanossm/_lib,
# build/capi_test_cuda, build/var_li.fatbin.
#  1. test_plans in full: its packed-wide case (a packed backward with K = 2 tiles a row in one
#     pass with segments, v83's default there) was added after session 33's last GPU call.
#  2. v83's worst case: packs whose one sequence holds 50-90% of the tokens, default (one pass
#     with segments cut by count) against NANOSSM_TUNE_PASSES=3 (three passes, the plan before).
#  3. Long chunks in v83's one-pass packs of few tiles (never measured): LONG=2 against default.
#  4. ncu of the prefix pass on a one-tile bf16 pack (25 us where ~10 were expected, call 6).
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
echo "== test_plans"; timeout 400 python3 -m pytest -q -rs tests/test_plans.py 2>&1 | tail -3
skew="65536,4,64:bf16:40:0.9 65536,4,64:bf16:16:0.5 65536,4,64:bf16:16:0.25 32768,8,64:bf16:8:0.6 65536,4,64:f32:40:0.9"
for passes in "" 3; do
  echo "== skewed packs PASSES=${passes:-default}"
  NANOSSM_TUNE_PASSES=$passes python3 docs/experiments/session34-skew.py $skew 2>&1 | grep -v -i warn
done
for long in "" 2; do
  echo "== bench --packed bf16 LONG=${long:-default}"
  NANOSSM_TUNE_LONG=$long python3 -m nanossm.bench --packed --dtypes bf16 --shapes "16,2048,16,32;8,4096,8,64;32,1024,8,32" \
    --plot /dev/null 2>&1 | grep -v "^device"
done
echo "== ncu: the prefix pass (three passes forced on a one-tile pack of 9 random sequences)"
NANOSSM_MODULE=$PWD/build/var_li.fatbin NANOSSM_TUNE_PASSES=3 OUT=$OUT \
  timeout 200 bash tools/ncu_source.sh prefix 4,16384,4,64 bf16 packed0 regex:nanossm_chunk_prefix
