#!/usr/bin/env bash
# On the GPU machine: time the module in the library and variant modules (tools/variant_module.sh)
# in one run, on the same shapes, and print one table of ratios to the copy of x (each module's
# own copy timing, same run). Not a test.
#   bash tools/ab_bench.sh [--backward] [--dtypes f32,bf16] [--shapes "B,T,R,C;..."] NAME=[MODULE][@VAR=VALUE,...] ...
# e.g. s8=build/var_s8.fatbin@NANOSSM_TUNE_FWD_STEPS=8,NANOSSM_TUNE_WARPS=4, or w4=@NANOSSM_TUNE_WARPS=4
# (the library's own module with a knob). The variables apply to that entry only. Forward by
# default; --backward compares the fused backward.
set -u
export PYTHONPATH=python PYTHONUNBUFFERED=1
mode=forward dtypes=f32 shapes="2,1024,64,64;8,2048,64,64;4,8192,64,64;1,65536,64,64;16,1024,16,128;1,262144,4,32"
mods=("lib=")
while [ $# -gt 0 ]; do
  case $1 in
    --backward) mode=backward; shift ;;
    --dtypes) dtypes=$2; shift 2 ;;
    --shapes) shapes=$2; shift 2 ;;
    *=*) mods+=("$1"); shift ;;
    *) echo "ab_bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
dir=${AB_KEEP:-$(mktemp -d)}; mkdir -p "$dir"  # AB_KEEP=DIR: keep each entry's bench log and JSON there
for m in "${mods[@]}"; do
  name=${m%%=*} spec=${m#*=}
  path=${spec%%@*} vars=(); [[ $spec == *@* ]] && IFS=, read -r -a vars <<< "${spec#*@}"
  [ -n "$path" ] && path=$(realpath "$path")
  flag=(); [ $mode = backward ] && flag=(--backward)
  rm -f "$dir/$name.json"  # (AB_KEEP: a failed entry must not print an earlier run's numbers)
  timeout 300 env "${vars[@]}" NANOSSM_MODULE="$path" python3 -m nanossm.bench --no-baselines "${flag[@]}" --dtypes "$dtypes" \
    --shapes "$shapes" --plot /dev/null --json "$dir/$name.json" > "$dir/$name.log" 2>&1 ||
    { echo "ab_bench: $name failed:"; tail -5 "$dir/$name.log"; }
done
python3 - "$dir" "$mode" "${mods[@]}" <<'PY'
import json, os, sys
d, mode, mods = sys.argv[1], sys.argv[2], [m.split("=")[0] for m in sys.argv[3:]]
key = "nanossm" if mode == "forward" else "backward"
runs = {m: json.load(open(os.path.join(d, m + ".json"))) for m in mods if os.path.exists(os.path.join(d, m + ".json"))}
rows = next(iter(runs.values()), [])
print(f"{mode}: ratio to the copy of x " + "".join(f"{m:>10}" for m in runs))
for i, r in enumerate(rows):
    label = f"{r['dtype']} {','.join(map(str, r['shape']))}"
    print(f"{label:>28} " + "".join(f"{runs[m][i][key] / runs[m][i]['copy']:10.3f}" for m in runs))
# each entry's largest error against float64 over its rows (forward: out; backward: dx and dA),
# so that a variant or a knob that computes wrong numbers shows here, not only in the tests
errs = ("err",) if mode == "forward" else ("err_dx", "err_dA")
for e in errs:
    print(f"{'max ' + e:>28} " + "".join(f"{max(r.get(e, float('nan')) for r in runs[m]):10.1e}" for m in runs))
PY
