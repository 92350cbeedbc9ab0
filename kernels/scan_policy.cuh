// The compile-time choices of the scan kernel template (kernels/scan_kernel.cuh) for one kernel
// (element type, packet width, direction, packed or not, carries by groups or not, states or
// not): which code paths it compiles, each with the measurement that chose it (versions are
// docs/performance.md's). Constants only: moving them here left the machine code unchanged
// (tools/sass_same.py). Device code only.
#pragma once

#include <stdint.h>

namespace nanossm {

template <typename T, int VEC, bool BWD, bool PACKED, bool GROUPED, bool STATES>
struct ScanPolicy {
  // (F_UNDECAYED, F_SCALE_HT: the backward's, compiled out of the packed forward, v31-v32)
  static constexpr bool kFwdPacked = PACKED && !BWD;
  // GROUPED: the group's aggregates read by several warps, their sums where the A table was
  // (group_carry_wide; the packed forward reads its tables again in phase 3: not there)
  static constexpr bool kWide = GROUPED;
  // The A table (scan_kernel's phase 1) where a warp's rows allow it, but in the packed backward
  // (the packed forward without states has it since v30, bf16 8,2048 packed / plain 1.211 ->
  // 1.142, with states since v32; the packed backward took 3-6% longer with it)
  static constexpr bool kTable = !PACKED || !BWD;
  // a at the end of chunk - 2, for a look-back that walks past the chunk before (v56): the fp32
  // backward and the 16-bit forward over 8-channel lanes (the 80-register kernels have no room;
  // the 16-bit backward, with v57, slowed on 4,8192: bf16 2.37 -> 2.59-2.62, session 22)
  static constexpr bool kPreA = !PACKED && !GROUPED && (BWD ? sizeof(T) == 4 : sizeof(T) == 2 && VEC == 8);
  // Without the table, each step's A in the copies' loop, or (kSplitA) in a loop of its own
  // that the table's warps skip (v18; the fp32 forward spilled 44 bytes with the split).
  static constexpr bool kSplitA = !PACKED && (BWD || (sizeof(T) == 2 && VEC == 8));
  // The packed backward tests a start and an end bit in every step; the packed forward takes
  // rolled loops in the warps that hold one instead (v32, v46: scan_kernel's phase 1 says why)
  static constexpr bool kBits = PACKED && BWD;
  // Sub-chunk s holds a sequence start: only packed calls have starts (v57: the plain kernels read
  // no flag, and their barrier's aftermath holds no shared-memory round trip for them; the GROUPED
  // forward kernels, at 80 registers, spilled 4 bytes without the reads: they keep them).
  static constexpr bool kResets = PACKED || (GROUPED && !BWD);
  // The sub-chunks before n folded into a running state, UNROLL where registers allow (v57: the
  // publisher's, on the chain's path, in the kernels over 16-byte packets but the fp32 forward and
  // the grouped ones, whose 80 registers spilled 8-24 bytes with it; every warp's phase-3 fold
  // unrolled too slowed the 16-bit forward 1-6%, v58)
  static constexpr bool kUnrollFold = !GROUPED && VEC >= 4 && (BWD || (sizeof(T) == 2 && VEC == 8));
  // kOneLooker (v67-v72; docs/performance.md has the figures): the last warp alone looks back
  // and hands the carry on (hand_carry): one warp's polls per block, not S warps', which queue
  // behind the SM's bulk traffic on long chains (backward f32 8,2048 2.11 -> 2.01 of the copy).
  // Packed, it looks back when warp 0 takes a carry in (no start at the block's first step),
  // which every warp that takes one implies; the others discard it (a start replaces their
  // state). Not in the packed forwards over single channels or the fp32 one with states, whose
  // 80 registers spilled with it: there every warp that needs the carry looks back.
  static constexpr bool kOneLooker = !GROUPED && !(kFwdPacked && (VEC == 1 || (STATES && sizeof(T) == 4)));
  // Carries by groups: in the 16-bit forward over 8-channel lanes and the GROUPED kernels
  // (groupChunks, fewTileGroup); in the plain fp32 forward it cost the plans that do not group
  // 1-3% (v24), the 4-channel 16-bit forward spilled, the plain backward slowed (v19).
  static constexpr bool kGrouped = !PACKED && (GROUPED || (!BWD && sizeof(T) == 2 && VEC == 8));
  // GROUPED: the publisher folds its aggregate again after the carry (same bits): held across
  // group_carry it spilled 32 bytes at 80 registers.
  static constexpr bool kRefold = GROUPED;
  // aggregates per round trip of the backward's wide shares (v37: 16-bit lanes spilled
  // with 8; the forward's 80 registers spilled with 4, v38)
  static constexpr int kWideBatch = !BWD ? 0 : VEC >= 8 ? 4 : 8;
  // The output pointer walks by increments where registers allow (the backward, the 16-byte
  // 16-bit forward, the packed rolled loop; the fp32 forward spilled 32 bytes with it, v17).
  static constexpr bool kStepPtr = BWD || (sizeof(T) == 2 && VEC == 8);
};

}  // namespace nanossm
