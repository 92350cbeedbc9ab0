#!/usr/bin/env bash
# Prepared in session 34, NOT RUN (its device time was spent): v86, the prefix pass's segments
# scanned across warps in log2(warps) rounds (docs/experiments/v86-prefix-warp-scan.patch; build
# it here with `tools/variant_module.sh v86 --patch docs/experiments/v86-prefix-warp-scan.patch`,
# sm_90 only), through NANOSSM_MODULE, against v84 (the library's module). Carry
# python/nanossm/_lib, build/var_v86.fatbin.
#  1. test_plans' forced three passes under v86 (every CASES entry, forward and backward, in two
#     child processes, against the CPU backend);
#  2. three passes serialized (NANOSSM_TUNE_NO_EARLY_LAUNCH=1): the prefix kernel's own time;
#  3. the backward over one tile (three passes by default).
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
v86=$PWD/build/var_v86.fatbin
echo "== forced three passes, v86"
NANOSSM_MODULE=$v86 timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_plans.py -k forced_three 2>&1 | tail -1
for m in v86 v84; do
  echo "== serialized three passes, $m"
  if [ $m = v86 ]; then export NANOSSM_MODULE=$v86; else unset NANOSSM_MODULE; fi
  NANOSSM_TUNE_PASSES=3 NANOSSM_TUNE_NO_EARLY_LAUNCH=1 python3 docs/experiments/session33-call4.py \
    4,16384,4,64:bf16 4,16384,4,64:f32 2>&1 | grep -v -i warn
done
for m in v86 v84; do
  echo "== backward, $m"
  if [ $m = v86 ]; then export NANOSSM_MODULE=$v86; else unset NANOSSM_MODULE; fi
  python3 -m nanossm.bench --backward --no-baselines --dtypes f32,bf16 --shapes "1,262144,4,32" --plot /dev/null 2>&1 | grep -v "^device"
done
