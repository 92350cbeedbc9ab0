#!/usr/bin/env bash
# Session 34, call 2: the prefix pass without local memory (kernels/chunk_prefix.cuh: a batch's
# loads had run one round trip after another behind spill stores; ncu in call 1: 29.6 us, stack
# 256 B). New library (its module) against the module before (build/scan_before.fatbin, through
# NANOSSM_MODULE), same run. Carry python/nanossm/_lib, build/scan_before.fatbin.
#  1. per-kernel times of three-pass packs (session33-call4.py under NANOSSM_TUNE_PASSES=3);
#  2. skewed packs, default and PASSES=3 (call 1 measured the module before);
#  3. the backward over few tiles (three passes by default) and the bf16 one-tile forward;
#  4. the tests of three-pass plans.
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
old=$PWD/build/scan_before.fatbin
packs="4,16384,4,64:bf16 16,2048,16,32:bf16 8,4096,8,64:bf16 4,16384,4,64:f32"
for m in new old; do
  echo "== per-kernel, PASSES=3, module $m"
  if [ $m = old ]; then export NANOSSM_MODULE=$old; fi
  NANOSSM_TUNE_PASSES=3 python3 docs/experiments/session33-call4.py $packs 2>&1 | grep -v -i warn
  unset NANOSSM_MODULE
done
skew="65536,4,64:bf16:40:0.9 65536,4,64:bf16:16:0.5 65536,4,64:bf16:16:0.25 32768,8,64:bf16:8:0.6 65536,4,64:f32:40:0.9"
echo "== skewed packs PASSES=3, new module"
NANOSSM_TUNE_PASSES=3 python3 docs/experiments/session34-skew.py $skew 2>&1 | grep -v -i warn
for m in new old; do
  echo "== bench --backward, module $m"
  if [ $m = old ]; then export NANOSSM_MODULE=$old; fi
  python3 -m nanossm.bench --backward --no-baselines --dtypes f32,bf16 \
    --shapes "1,262144,4,32;2,262144,8,32;1,65536,64,64;2,1024,64,64" --plot /dev/null 2>&1 | grep -v "^device"
  unset NANOSSM_MODULE
done
echo "== tests of three-pass plans (new module)"
timeout 300 python3 -m pytest -q -x tests/test_plans.py -k "three_passes or grouped or segments or long-bwd or wide or packed" 2>&1 | tail -3
timeout 120 python3 -m pytest -q -x tests/test_packed.py 2>&1 | tail -2
