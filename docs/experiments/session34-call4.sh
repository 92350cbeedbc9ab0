#!/usr/bin/env bash
# Session 34, call 4: the C ABI test on the GPU with 0.2's header (max_seqlen, 0.1's struct size),
# and the prefix pass serialized after v84 (NANOSSM_TUNE_NO_EARLY_LAUNCH=1: each pass alone, so
# the profiler's prefix time is its own). Carry python/nanossm/_lib, build/capi_test_cuda.
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
echo "== capi_test_cuda"; build/capi_test_cuda 2>&1 | tail -3
echo "== three passes, serialized"
NANOSSM_TUNE_PASSES=3 NANOSSM_TUNE_NO_EARLY_LAUNCH=1 python3 docs/experiments/session33-call4.py \
  4,16384,4,64:bf16 4,16384,4,64:f32 2>&1 | grep -v -i warn
