#!/usr/bin/env bash
# On the GPU machine: bench the default library and each variant in build/variants, fp32, the
# issue-3 shapes, plus warps-per-block settings; prints one table per run.
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
SHAPES="2,1024,64,64;8,2048,64,64;4,8192,64,64;1,65536,64,64;16,1024,16,128;1,262144,4,32"
run() { echo "== $*"; env "$@" python3 -m nanossm.bench --no-baselines --shapes "$SHAPES" --plot /dev/null 2>&1 | grep -E "^ *(f32|f16|bf16)"; }
run NANOSSM_X=default
for w in ${WARPS:-4}; do run NANOSSM_TUNE_WARPS=$w; done
for v in build/variants/*/; do run NANOSSM_LIB_DIR=$v; done
