#!/usr/bin/env bash
# Session 34, call 3: v85 (max_seqlen, the packed plan hint) and v84 (the prefix pass without local
# memory) on the GPU. Carry python/nanossm/_lib.
#  1. skewed packs without and with max_seqlen (timing first, alone on the GPU);
#  2. the tests the two touch, in three processes at once: test_plans (all 39, in two halves),
#     and test_max_seqlen, test_packed, test_torch_op, test_backward, test_sequences.
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
skew="65536,4,64:bf16:40:0.9 65536,4,64:bf16:16:0.5 65536,4,64:bf16:16:0.25 32768,8,64:bf16:8:0.6 65536,4,64:f32:40:0.9"
echo "== skewed packs (default plan, then max_seqlen given)"
python3 docs/experiments/session34-skew.py $skew 2>&1 | grep -v -i warn
echo "== tests"
t=/tmp/t; mkdir -p $t
timeout 420 python3 -m pytest -q -p no:cacheprovider tests/test_plans.py -k "default or three_passes or segments" > $t/a 2>&1 &
timeout 420 python3 -m pytest -q -p no:cacheprovider tests/test_plans.py -k "grouped or long_chunks" > $t/b 2>&1 &
timeout 420 python3 -m pytest -q -p no:cacheprovider tests/test_max_seqlen.py tests/test_packed.py tests/test_torch_op.py \
  tests/test_backward.py tests/test_sequences.py > $t/c 2>&1 &
wait
for f in a b c; do echo "-- $f"; grep -E "passed|failed|error|FAILED|Error" $t/$f | tail -6; done
