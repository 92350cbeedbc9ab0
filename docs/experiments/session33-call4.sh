#!/usr/bin/env bash
# Session 33, call 4: packs of few tiles (session33-call4.py) under the default plan (three passes
# for one or two tiles), one pass (segments, one per sequence) and one pass without segments.
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
shapes="4,16384,4,64:bf16 16,2048,16,32:bf16 8,4096,8,64:bf16 4,16384,4,64:f32 1,65536,4,64:bf16 2,32768,4,64:bf16"
for knobs in "" "NANOSSM_TUNE_PASSES=1" "NANOSSM_TUNE_PASSES=1 NANOSSM_TUNE_SEGMENTS=1" ""; do
  echo "== ${knobs:-default}"
  env $knobs python3 docs/experiments/session33-call4.py $shapes 2>&1 | grep -v Warning
done
