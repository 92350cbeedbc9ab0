#!/usr/bin/env bash
# Session 33, call 5: packs of few tiles take one pass with segments where their segments average
# at most 64 chunks (core/plan_packed.go packedChain), else three passes: `bench --packed` on
# few-tile packs, default against NANOSSM_TUNE_PASSES=3 (the plan before, for these packs; it also
# forces the plain scan's three passes: compare the packed columns), forward and backward; then
# the plan tests of default plans and segments, and test_packed.
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
few="16,2048,16,32;8,4096,8,64;4,16384,4,64;32,1024,8,32"
for passes in "" 3 "" 3; do
  echo "== bench --packed bf16 PASSES=${passes:-default}"
  NANOSSM_TUNE_PASSES=$passes python3 -m nanossm.bench --packed --dtypes bf16 --shapes "$few" --plot /dev/null 2>&1 | grep -v "^device"
done
echo "== bench --packed f32 default, PASSES=3"
python3 -m nanossm.bench --packed --dtypes f32 --shapes "$few" --plot /dev/null 2>&1 | grep -v "^device"
NANOSSM_TUNE_PASSES=3 python3 -m nanossm.bench --packed --dtypes f32 --shapes "$few" --plot /dev/null 2>&1 | grep -v "^device"
timeout 240 python3 -m pytest -q -rs tests/test_plans.py -k "segments or default" tests/test_packed.py 2>&1 | tail -3
