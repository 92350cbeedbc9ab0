#!/usr/bin/env bash
# Session 31, call 1 (prepared in session 30, not run): the packed 16-bit forward over 8-channel
# lanes at 22 steps, the lever of v81 (two blocks a SM keep 176 KB in flight instead of 128 KB).
# Since v81 the plain bf16 forward from T = 1536 is 3-10% faster, so `bench --packed`'s packed /
# plain ratios of bf16 8,2048 and 4,8192 rise unless the packed kernels get the same.
# Build here first (no Go or nvcc needed there):
#   make lib && tools/variant_module.sh v8s22 -DNANOSSM_FWD_STEPS=22 -DNANOSSM_MIN_BLOCKS=2
#   (packed v8 at 22 steps: 96-102 registers, static 17,056 / 18,464 B by cuobjdump, less 1 KB
#   by the driver: two blocks of 88 KB fit)
# carry: python/nanossm/_lib, build/var_v8s22.fatbin, docs/experiments/session31-call1.sh
# Compare the packed ms of the two runs (the module's plain rows take the long kernel as the
# library does from T >= 1536; T = 1024 rows run the module's 22-step plain kernel).
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
python3 -m nanossm.bench --packed --dtypes bf16,f16 --plot /dev/null
NANOSSM_MODULE=$PWD/build/var_v8s22.fatbin NANOSSM_TUNE_FWD_STEPS=22 python3 -m nanossm.bench --packed --dtypes bf16,f16 --plot /dev/null
python3 -m nanossm.bench --packed --dtypes bf16 --plot /dev/null
