#!/usr/bin/env bash
# ncu's view of the forward, backward and packed kernels on one shape (GPU machine; carry
# python/nanossm/_lib): DRAM bytes and throughput, achieved occupancy, and the top stall reasons.
# usage: bash tools/ncu_compare.sh [B,T,R,C]
set -u
shape=${1:-8,2048,64,64}
export PYTHONPATH=python
m='dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,gpu__time_duration.sum,sm__warps_active.avg.pct_of_peak_sustained_active,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio'
for mode in fwd bwd packed; do
  arg=""; [ $mode != fwd ] && arg=$mode
  k='nanossm_scan_fwd_(grouped_)?f'; [ $mode = bwd ] && k=nanossm_scan_bwd; [ $mode = packed ] && k=nanossm_scan_fwd_packed
  echo "== $mode $shape"
  ncu --clock-control none --metrics "$m" -k regex:$k -s 1 -c 1 python3 tools/profile_one.py $shape f32 3 $arg 2>&1 |
    grep -E "nanossm_scan|bytes|throughput|duration|warps_active|stalled" | awk '$NF+0 > 0.3 || /nanossm|bytes|duration|throughput/' | sed -E 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' | head -16
done
