#!/usr/bin/env bash
# Build libnanossm.so once per kernel variant (nvcc -D flags) for side-by-side timing on the GPU:
#   tools/build_variants.sh NAME="-DFLAG=1 ..." ...   -> build/variants/NAME/libnanossm.so
# Then on the device: NANOSSM_LIB_DIR=build/variants/NAME python -m nanossm.bench ...
# kernels/scan.fatbin is rebuilt from the source afterwards (make kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
make -s lib >/dev/null
for spec in "$@"; do
  name=${spec%%=*}; flags=${spec#*=}
  make -s kernels NVCCFLAGS="-O3 -std=c++17 \$(GENCODE) $flags" >/dev/null
  mkdir -p build/variants/$name
  make -s lib LIBDIR=build/variants/$name >/dev/null
  rm -f build/variants/$name/libnanossm_cpu.so
  echo "variant $name ($flags): build/variants/$name/libnanossm.so"
done
make -s kernels
make -s lib
