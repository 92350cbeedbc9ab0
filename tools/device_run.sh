#!/usr/bin/env bash
# Everything the GPU machine checks, in one call (run from the repo root there, after `make lib
# test-c` here; carry python/nanossm/_lib and build/capi_test_cuda):
#   the pytest suite (CUDA cases run), the C ABI test on the GPU, compute-sanitizer on odd shapes,
#   the demo, the benchmarks (forward table + plots, backward, packed) and an ncu stall breakdown.
#   Logs go to $OUT. NO_BENCH=1 stops after the sanitizers; ONLY_BENCH=1 runs the demo and benches;
#   SKIP_PYTEST=1 leaves out the suite (run before, on its own). Every step runs under `timeout`:
#   a hang (session 8: a deadlocked look-back) costs minutes, not the session's device time.
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/nanossm-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
if [ -z "${ONLY_BENCH:-}" ]; then
if [ -z "${SKIP_PYTEST:-}" ]; then
  echo "== pytest"; timeout 420 python3 -m pytest -q -rs -s tests 2>&1 | tee "$OUT/pytest.log" | grep -E "rows on|threads x|calls on|passed|failed|Error" | tail -12
fi
echo "== soak: 16 threads, own streams, ${SOAK:-60} s"
NANOSSM_SOAK_SECONDS=${SOAK:-60} timeout $(( ${SOAK:-60} + 120 )) python3 -m pytest -q -s tests/test_robustness.py -k "concurrent and cuda" 2>&1 | grep -E "threads|passed|failed"
echo "== C ABI on the GPU"; build/capi_test_cuda
echo "== compute-sanitizer"
# memcheck on every case; racecheck on the multi-block, backward and packed ones; initcheck and
# synccheck on three (each case is a separate process: the sanitizers are slow)
# (1,9000,2,8 takes three passes: one tile, 71 forward / 282 backward chunks (4 warps); passes 2
# and 3 launched early behind the pass before them)
all=("2,301,3,5 f32 1" "2,1000,4,16 f32 1" "1,517,3,64 f16 1" "3,129,2,8 bf16 1" "2,301,3,5 f32 1 bwd"
     "1,517,3,64 bf16 1 bwd" "1,600,1,640 f32 1 bwd" "5,300,2,8 f32 1 packed" "4,700,3,64 bf16 1 packed"
     "1,9000,2,8 f32 1 bwd" "1,9000,1,5 f32 1 bwd")
some=("2,1000,4,16 f32 1" "2,301,3,5 f32 1 bwd" "5,300,2,8 f32 1 packed" "1,9000,2,8 f32 1")
for tool in memcheck racecheck initcheck synccheck; do
  cases=("${some[@]}"); [ $tool = memcheck ] && cases=("${all[@]}")
  [ $tool = racecheck ] && cases=("2,1000,4,16 f32 1" "1,517,3,64 bf16 1 bwd" "1,600,1,640 f32 1 bwd" "4,700,3,64 bf16 1 packed"
                                  "1,9000,2,8 f32 1" "1,9000,2,8 f32 1 bwd")
  for case in "${cases[@]}"; do
    timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 python3 tools/profile_one.py $case > "$OUT/sanitizer.log" 2>&1
    echo "$tool $case: rc=$? $(grep -E 'ERROR SUMMARY|hazard' "$OUT/sanitizer.log" | tail -1)"
  done
done
# carries by groups (the 16-bit forward over 8-channel lanes, the fp32 forward's grouped kernel,
# the backward's grouped kernels: group_carry at G <= 4, group_carry_wide above, both over the A
# table's shared memory; forced on: 71 forward (bf16: 52 long ones, longChunks) / 141 backward
# chunks, single pass)
for tool in memcheck racecheck; do
  for dt in "bf16 3" "f32 2" "bf16 2 bwd" "bf16 16 bwd" "f32 2 bwd" "f32 16 bwd"; do
    set -- $dt
    NANOSSM_TUNE_PASSES=1 NANOSSM_TUNE_GROUP=$2 timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 \
      python3 tools/profile_one.py 1,9000,4,64 $1 1 ${3:-} > "$OUT/sanitizer.log" 2>&1
    echo "$tool 1,9000,4,64 $1 1 ${3:-} (grouped by $2): rc=$? $(grep -E 'ERROR SUMMARY|hazard' "$OUT/sanitizer.log" | tail -1)"
  done
done
[ -n "${NO_BENCH:-}" ] && exit 0
fi
echo "== demo"; python3 -m nanossm.demo; python3 -m nanossm.demo --shape 4,8192,64,64
echo "== training demo"; python3 -m nanossm.train_demo --steps 300 | tail -1
echo "== bench"
timeout 240 python3 -m nanossm.bench --plot "$OUT/bench.png" --json "$OUT/bench_f32.json" 2>&1 | tee "$OUT/bench.log"
timeout 240 python3 -m nanossm.bench --no-baselines --dtypes f16,bf16 --plot "$OUT/bench_half.png" --json "$OUT/bench_half.json" 2>&1 | tee -a "$OUT/bench.log"
echo "== bench: backward"
timeout 240 python3 -m nanossm.bench --backward --dtypes f32,bf16 --json "$OUT/bench_bwd.json" 2>&1 | tee -a "$OUT/bench.log"
echo "== bench: packed"
timeout 240 python3 -m nanossm.bench --packed --dtypes f32 --json "$OUT/bench_packed.json" 2>&1 | tee -a "$OUT/bench.log"
[ -n "${PROFILE:-}" ] || exit 0
echo "== host profile"; python3 tools/host_profile.py
echo "== ncu"
ncu --clock-control none --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active' \
  -k regex:nanossm_scan -s 2 -c 1 python3 tools/profile_one.py 4,8192,64,64 f32 3 > "$OUT/ncu.txt" 2>&1
grep -E "ratio|pct" "$OUT/ncu.txt" | awk '$NF+0 > 0.05' | sort -k3 -n -r | head -14
