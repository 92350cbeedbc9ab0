#!/usr/bin/env bash
# Session 33, call 1: the packed 16-bit forward over long chunks (nanossm_scan_fwd_packed_long_*,
# nanossm_scan_fwd_packed_nostate_long_*) and the per-kernel block shares of Device.holds, on the
# H200: the whole suite, the C ABI test, sanitizers on packed long plans. Built here first
# (make lib test-c); carry python/nanossm/_lib, build/capi_test_cuda.
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
echo "== pytest"
timeout 450 python3 -m pytest -q -rs tests 2>&1 | tail -6
echo "== C ABI on the GPU"; build/capi_test_cuda | tail -2
echo "== compute-sanitizer"
# 2,2048,8,64: two tiles of 24 long chunks (few tiles); 8,512,8,64 at T = 4096 alike, packed0;
# 4,700,3,64: one tile, T = 2800, long by default
for tool in memcheck racecheck; do
  for c in "2,2048,8,64 bf16 1 packed" "8,512,8,64 f16 1 packed0" "4,700,3,64 bf16 1 packed"; do
    timeout 120 compute-sanitizer --tool $tool --error-exitcode 9 python3 tools/profile_one.py $c > /tmp/san.log 2>&1
    echo "$tool $c: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' /tmp/san.log | tail -1)"
  done
done
