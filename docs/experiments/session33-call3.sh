#!/usr/bin/env bash
# Session 33, call 3: after call 2 the packed 16-bit forward takes long chunks only over more tiles
# than SMs / 32 (few-tile packs lost): the plan tests of long chunks and segments, the packed
# tests, and `bench --packed` of the few-tile packs and two of many tiles (default plans against
# NANOSSM_TUNE_LONG=1 in the same run).
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
timeout 300 python3 -m pytest -q -rs tests/test_plans.py -k "segments or long_chunks or default" tests/test_packed.py 2>&1 | tail -3
shapes="4,16384,4,64;16,2048,16,32;8,2048,64,64;16,1024,16,128"
for long in "" 1 "" 1; do
  echo "== bench --packed bf16 LONG=${long:-default}"
  NANOSSM_TUNE_LONG=$long python3 -m nanossm.bench --packed --dtypes bf16 --shapes "$shapes" --plot /dev/null 2>&1 | grep -v "^device"
done
