// nanossm scan kernels: one pass over x, O(T) work, parallel over T and over (b, r, c).
//
// Recurrence, per lane (b, r, c), with A the cumulative log-decay (A[-1] := 0):
//     h[t] = exp(A[t] - A[t-1]) * h[t-1] + x[t],    out[t] = h[t],    h[-1] = h0 (or 0)
// so  out[t] = exp(A[t]) * h0 + sum_{j<=t} exp(A[t] - A[j]) * x[j].
// Reverse runs the same recurrence in "scan order" tau = T-1-t with a(tau) = -A[T-1-tau]:
//     out[t] = sum_{j>=t} exp(A[j] - A[t]) * x[j].
// Every decay is the exp of a difference of A values (never exp(A[t]) * exp(-A[j])), and the
// difference is always taken "later minus earlier" in scan order, so it is <= 0 for decays <= 0.
//
// The backward kernel (BWD) is the same scan run over g = dL/dout in the opposite direction,
//     dx[j] = sum_{t>=j} exp(A[t] - A[j]) * g[t],
// that also reads x and out at each step (staged like g) and writes, in the same pass,
//     dA[t] = sum_c (g[t] * out[t] - x[t] * dx[t])     (negated when the forward ran in reverse)
//     dh0   = exp(A[s] - A[s-1]) * dx[s]               (s: the sequence's first step)
// The gradient of the final state enters as the backward scan's initial state, undecayed, and
// joins g at that step. dA's sum over c runs across the lanes of one (b, r) in a fixed order,
// after the step loop, through shared memory (reduce_dA in kernels/scan_parts.cuh).
//
// Decomposition
//   lane   = VEC consecutive channels of one (b, r): a 16-byte packet when the layout allows
//            (VEC = 4 for fp32, 8 for fp16/bf16; stride_c == 1, C % VEC == 0, aligned), an
//            8-byte one in the 16-bit forward where 8-channel lanes would not fill a warp or C
//            allows no 16-byte packet (VEC = 4), otherwise one channel (VEC = 1).
//   tile   = 32 lanes (one warp wide).  A block is 32 x S threads: S warps stacked along T.
//            Forward: lanes are consecutive (b, r, c/VEC).  Backward: a tile holds whole (b, r)
//            rows of CV = C/VEC lanes (32/CV of them) or, when CV > 32, K = ceil(CV/32) tiles
//            share one row and write partial sums of dA that nanossm_dA_reduce adds up.
//   chunk  = S * STEPS consecutive steps (backward: S * BWD_STEPS); warp w of a block owns
//            steps [w*STEPS, (w+1)*STEPS). The long-chunk kernels (*_long_*, below) take
//            LONG_STEPS, V8_LONG_STEPS or BWD_LONG_STEPS per thread instead.
// Each thread stages its STEPS packets in shared memory with asynchronous copies (all in flight
// at once, holding no registers), folds them into a zero-carry aggregate, the block combines the
// S aggregates in shared memory, and when T needs more than one chunk, chunks pass carries
// through a deterministic decoupled look-back (single pass: x is read once and out written once;
// results are bit-identical run to run), which the block's last warp does alone, handing the
// carry to the others through shared memory (v67-v68, v72; not in the fp32 packed forward with
// states or the packed forwards over single channels, below).  With the carry known, each
// thread replays its STEPS steps from shared memory and writes out.  Blocks are numbered
// chunk-major, so a block only waits on blocks dispatched before it: no deadlock.  (The
// backward's copies of x and out, which only the replay reads, are a second group that the fold
// does not wait for: issue_steps, v40; over few tiles the late kernels, and the grouped ones,
// issue them after the carry instead: bwd_late_*, v73-v74, below.)
//
// Packed variable-length sequences (PACKED, B = 1): at a sequence start the state restarts from
// h0[k] (decayed by exp(A[s] - A[s-1]), as SPEC defines) or 0. A sub-chunk or chunk holding a
// start has an aggregate that no earlier carry reaches: it is published straight away as an
// inclusive prefix, so look-back never passes a sequence start, and a block whose first step is
// a start looks back not at all (warps whose steps begin after a start in their block discard
// the carry; in the fp32 packed forward with states and the packed forwards over single channels
// each warp looks back for itself, or skips).
// Each warp finds its sequences in cu_seqlens while its staging copies fly: one boundary per
// lane, all of them with fewer than 32 sequences, else a 32-way search then the 32 boundaries
// from there (packed_walk). A packed call with no initial and no final state takes kernels of
// their own (STATES = false, *_packed_nostate_*), whose step loops carry no code for either. A
// pack is one row of chunks per tile, its chains long and few: a single pass cuts it into up to
// 31 segments at sequence starts, independent chains whose chunks are dispatched level by level
// (segment_chunk in packed.cuh).
//
// Few tiles, many chunks: the look-back's chain (one link per L2 round trip, ~0.4 us) would set
// the time. The forward over packets then takes carries by large groups (below; v33), and so
// does the fp32 backward over one tile of a long T (v37); the other backwards and single-channel
// lanes take three launches (core/plan.go): pass 1 (F_AGG_ONLY) stages
// x, publishes every chunk's aggregate and returns (chunk 0 runs in full); pass 2
// (nanossm_chunk_prefix_v*, kernels/chunk_prefix.cuh) turns the aggregates into every chunk's
// prefix in parallel; pass 3 (F_PREFIXED) is the single pass above, whose look-back now finds
// its predecessor's prefix at once, run from the last chunk to the first so that it reads first
// what pass 1 read last (still in L2). x is read twice instead of once. Where the device has
// programmatic dependent launch, passes 2 and 3 launch early: pass 2 without a launch gap behind
// pass 1, pass 3's blocks staging x and scanning their chunk while pass 2 runs (pass 2 lets them
// launch at its start; each waits for pass 2 before its look-back).
//
// Many chunks per tile in a single-pass forward, 16-bit over 8-channel lanes, or any type over
// 4-channel lanes (kernels of their own, nanossm_scan_fwd_grouped_*_v4; core/plan_heuristics.go
// groupChunks and fewTileGroup): carries by groups of G chunks (flag bits 8-15, group_carry and
// group_carry_wide in carries.cuh). A chunk's carry is the prefix of the chunk before its
// group, decayed, plus its group's earlier aggregates folded from zero, so a tile's chain of
// prefixes advances G chunks per hop.
//
// Every parameter is 64 bits wide: gorgonia.org/cu copies kernel arguments as 8-byte words.
// The parameter order is part of the contract with core/cuda/backend.go.

#include "chunk_prefix.cuh"
#include "scan_kernel.cuh"

using nanossm::BWD_MAX_WARPS;
using nanossm::chunk_prefix;
using nanossm::PREFIX_MAX_WARPS;
using nanossm::MAX_WARPS;
using nanossm::MIN_BLOCKS;
using nanossm::Params;
using nanossm::scan_kernel;
using nanossm::WARP;

// Entry points: nanossm_scan_{fwd,bwd}[_packed]_<dtype>_v<VEC>.  The host's dispatch table
// (core/kernel_table.go) names them; VEC > 1 only when every tensor of x's shape has stride_c == 1,
// C % VEC == 0 and the packet's alignment.
#define NANOSSM_COMMON_PARAMS(TYPE)                                                                 \
  const float *A, const TYPE *x, TYPE *out, const float *h0, float *hT, char *ws, const void *cu, \
      int64_t n_seqs, int64_t B, int64_t T, int64_t R, int64_t C, int64_t sAb, int64_t sAt,        \
      int64_t sAr, int64_t sxb, int64_t sxt, int64_t sxr, int64_t sxc, int64_t sob, int64_t sot,   \
      int64_t sor, int64_t soc, int64_t flags, int64_t n_chunks, int64_t n_tiles
#define NANOSSM_COMMON_INIT                                                                  \
  {A, x, out, h0, hT, ws, cu, n_seqs, B, T, R, C, {sAb, sAt, sAr}, {sxb, sxt, sxr, sxc}, \
   {sob, sot, sor, soc}, flags, n_chunks, n_tiles}

// Register budgets: the forward, plain or packed, keeps 3 blocks of 256 threads per SM (80
// registers: the packed walk runs in a rolled loop), 2 over 16-bit packets (fwd_min_blocks in
// kernels/scan_common.cuh); the backward stages three tensors (3 x 32 KB
// per block of 8 warps x 8 steps), so 2 blocks per SM fill shared memory (128 registers).
// STATES = false: the packed kernels for a call with no initial and no final state (the common
// packed call; core/plan.go picks them). Until v32 the code that restarts a sequence from its
// initial state and writes its final state sat in the unrolled step loops and cost every warp
// instruction fetches (ncu, packed fp32 forward 8,2048,64,64: "no instruction" 2.4 cycles per
// issued instruction; without it the packed forward went from 1.31x to 1.14x the plain scan's
// time, the backward from 1.30x to 1.18x, v25). The packed backward's still does; the packed
// forward's is in rolled loops taken only by the warps holding a start or an end (v32), so its
// two kernels differ by the states' loads and stores alone.
#define NANOSSM_FWD(NAME, TYPE, VEC, PACKED, STATES)                                             \
  extern "C" __global__ void __launch_bounds__(WARP * MAX_WARPS,                                \
                                               nanossm::fwd_min_blocks(sizeof(TYPE), VEC))        \
      NAME(NANOSSM_COMMON_PARAMS(TYPE)) {                                                        \
    const Params<TYPE> p NANOSSM_COMMON_INIT;                                                    \
    scan_kernel<TYPE, VEC, false, PACKED, false, STATES>(p);                                     \
  }

// The backward adds the forward's x and out, dA, dA's partial sums and K (tiles per row).
// (NANOSSM_BWD_MIN_BLOCKS: the blocks of BWD_MAX_WARPS warps an SM must hold, 2; a build knob for
// variants with other NANOSSM_BWD_STEPS, whose blocks have more warps)
#ifndef NANOSSM_BWD_MIN_BLOCKS
#define NANOSSM_BWD_MIN_BLOCKS 2
#endif
// (NANOSSM_BWD_KERNEL_AT: STEPS steps per thread, 0 the module's, MINB blocks per SM)
#define NANOSSM_BWD(NAME, TYPE, VEC, PACKED, STATES) NANOSSM_BWD_KERNEL(NAME, TYPE, VEC, PACKED, STATES, false, false)
#define NANOSSM_BWD_KERNEL(NAME, TYPE, VEC, PACKED, STATES, GROUPED, LATE) \
  NANOSSM_BWD_KERNEL_AT(NAME, TYPE, VEC, PACKED, STATES, GROUPED, LATE, 0, NANOSSM_BWD_MIN_BLOCKS)
#define NANOSSM_BWD_KERNEL_AT(NAME, TYPE, VEC, PACKED, STATES, GROUPED, LATE, STEPS, MINB)        \
  extern "C" __global__ void __launch_bounds__(WARP * BWD_MAX_WARPS, MINB)                        \
      NAME(NANOSSM_COMMON_PARAMS(TYPE), const TYPE *xo, int64_t sxob, int64_t sxot, int64_t sxor, \
           int64_t sxoc, const TYPE *yo, int64_t syob, int64_t syot, int64_t syor, int64_t syoc,  \
           float *dA, int64_t sdAb, int64_t sdAt, int64_t sdAr, float *dA_part, int64_t K) {      \
    Params<TYPE> p NANOSSM_COMMON_INIT;                                                           \
    p.xo = xo, p.yo = yo, p.dA = dA, p.dA_part = dA_part, p.K = K;                                \
    p.sxo[0] = sxob, p.sxo[1] = sxot, p.sxo[2] = sxor, p.sxo[3] = sxoc;                           \
    p.syo[0] = syob, p.syo[1] = syot, p.syo[2] = syor, p.syo[3] = syoc;                           \
    p.sdA[0] = sdAb, p.sdA[1] = sdAt, p.sdA[2] = sdAr;                                            \
    scan_kernel<TYPE, VEC, true, PACKED, GROUPED, STATES, LATE, STEPS>(p);                        \
  }

#define NANOSSM_ALL(KIND, MACRO, PACKED, STATES, SUFFIX)                              \
  MACRO(nanossm_scan_##KIND##SUFFIX##_f32_v4, float, 4, PACKED, STATES)               \
  MACRO(nanossm_scan_##KIND##SUFFIX##_f32_v1, float, 1, PACKED, STATES)               \
  MACRO(nanossm_scan_##KIND##SUFFIX##_f16_v8, __half, 8, PACKED, STATES)              \
  MACRO(nanossm_scan_##KIND##SUFFIX##_f16_v1, __half, 1, PACKED, STATES)              \
  MACRO(nanossm_scan_##KIND##SUFFIX##_bf16_v8, __nv_bfloat16, 8, PACKED, STATES)      \
  MACRO(nanossm_scan_##KIND##SUFFIX##_bf16_v1, __nv_bfloat16, 1, PACKED, STATES)

NANOSSM_ALL(fwd, NANOSSM_FWD, false, true, )
NANOSSM_ALL(fwd, NANOSSM_FWD, true, true, _packed)
NANOSSM_ALL(fwd, NANOSSM_FWD, true, false, _packed_nostate)
// The forward also takes 16-bit lanes of 4 channels (8-byte packets): fp32's registers per lane,
// so 3 blocks per SM where the 8-channel lanes fit 2 (core/plan.go picks the width).
#define NANOSSM_FWD16_V4(MACRO, PACKED, SUFFIX)                                \
  MACRO(nanossm_scan_fwd##SUFFIX##_f16_v4, __half, 4, PACKED, true)            \
  MACRO(nanossm_scan_fwd##SUFFIX##_bf16_v4, __nv_bfloat16, 4, PACKED, true)
NANOSSM_FWD16_V4(NANOSSM_FWD, false, )
// The forward over 4-channel lanes with carries by groups of chunks (core/plan_heuristics.go:
// groupChunks picks the fp32 one for long chains, fewTileGroup any of them for few tiles):
// kernels of their own, so that the plain forward keeps its machine code. (The 16-bit ones, with
// group_carry compiled into the plain 4-channel kernel, spilled; here the group's carry holds
// its partial sums in the A table's shared memory, group_carry_wide.)
#define NANOSSM_FWD_GROUPED(NAME, TYPE) NANOSSM_FWD_GROUPED_AT(NAME, TYPE, 0, MIN_BLOCKS)
#define NANOSSM_FWD_GROUPED_AT(NAME, TYPE, STEPS, MINB)                                     \
  extern "C" __global__ void __launch_bounds__(WARP * MAX_WARPS, MINB)                        \
      NAME(NANOSSM_COMMON_PARAMS(TYPE)) {                                                    \
    const Params<TYPE> p NANOSSM_COMMON_INIT;                                                \
    scan_kernel<TYPE, 4, false, false, true, true, false, STEPS>(p);                         \
  }
NANOSSM_FWD_GROUPED(nanossm_scan_fwd_grouped_f32_v4, float)
NANOSSM_FWD_GROUPED(nanossm_scan_fwd_grouped_f16_v4, __half)
NANOSSM_FWD_GROUPED(nanossm_scan_fwd_grouped_bf16_v4, __nv_bfloat16)
// Long chunks (core/plan_heuristics.go longChunks): a chain of few tiles advances one chunk per
// hop, so a block that moves more bytes takes fewer hops for the same tensor. The 16-bit grouped
// forward over 4-channel lanes stages 32 steps of 8-byte packets per thread (256 bytes, what
// fp32's 16 steps of 16 bytes stage; 64 KB a block; 2 blocks a SM, as 3 spilled 144 bytes). Measured on the H200 as a
// whole module at 32 steps and 2 blocks a SM (session 29 call 2, ratio to the copy, same run,
// 16 steps / 32, one tile): bf16 1,262144,4,32 2.13 / 1.85, 1,524288 2.21 / 1.83, 1,131072 2.14
// / 1.76; the fp32 forward lost there (1.39 / 1.72), so fp32 keeps 16.
NANOSSM_FWD_GROUPED_AT(nanossm_scan_fwd_grouped_long_f16_v4, __half, nanossm::LONG_STEPS, 2)
NANOSSM_FWD_GROUPED_AT(nanossm_scan_fwd_grouped_long_bf16_v4, __nv_bfloat16, nanossm::LONG_STEPS, 2)
// The 16-bit forward over 8-channel lanes over long chunks: 22 steps of 16-byte packets per
// thread (88 KB a block, two a SM: 176 KB in flight where the module's 16 steps keep 128 KB;
// fp32 keeps 3 x 64 KB). Its plain kernel with its group carry, at 22 steps, for T long enough
// that the longer chunks waste little (longChunks). Measured on the H200 as whole modules (session
// 30 call 1, ratio to the copy, same run, 16 steps / 20 / 22 / 24 with the hand-over sharing
// the group carry's buffer): bf16 1,65536,64,64 1.25 / 1.14 / 1.12 / 1.11, 4,8192 1.16 / 1.13 /
// 1.12 / 1.12, 8,2048 1.16 / 1.14 / 1.13 / 1.14, f16 alike; T = 1024 lost (2,1024 1.36-1.43 /
// 1.48 / 1.50-1.78 / 1.50, 16,1024,16,128 1.23-1.26 / 1.22-1.25 / 1.27 / 1.27).
#define NANOSSM_FWD_LONG_V8(NAME, TYPE)                                               \
  extern "C" __global__ void __launch_bounds__(WARP * MAX_WARPS, 2)                   \
      NAME(NANOSSM_COMMON_PARAMS(TYPE)) {                                             \
    const Params<TYPE> p NANOSSM_COMMON_INIT;                                         \
    scan_kernel<TYPE, 8, false, false, false, true, false, nanossm::V8_LONG_STEPS>(p); \
  }
NANOSSM_FWD_LONG_V8(nanossm_scan_fwd_long_f16_v8, __half)
NANOSSM_FWD_LONG_V8(nanossm_scan_fwd_long_bf16_v8, __nv_bfloat16)
// The packed forward (cu_seqlens) over the same long chunks: its plain kernel at 22 steps, with
// and without states (static arrays sized by the steps, 1 KB more; 96-102 registers, no
// spills, two 88 KB blocks a SM on the H200). Measured on the H200 as a whole module so built
// (session 32 call 1, packed / plain time, same run, 16 steps / 22): bf16 8,2048,64,64 equal
// lengths 1.146 / 1.102, uneven 1.237 / 1.166, with states 1.170 / 1.112; 4,8192 1.123 / 1.065,
// 1.192 / 1.118, 1.145 / 1.076; 16,1024,16,128 1.119 / 1.106, 1.241 / 1.182; f16 alike. Short
// tensors (2,1024) lost a little, and packs of one or two tiles (three passes then) lost (session
// 33: bf16 16,2048,16,32 0.069 -> 0.081 ms), so longChunks takes them over more tiles than SMs / 32.
#define NANOSSM_FWD_PACKED_LONG_V8(NAME, TYPE, STATES)                               \
  extern "C" __global__ void __launch_bounds__(WARP * MAX_WARPS, 2)                  \
      NAME(NANOSSM_COMMON_PARAMS(TYPE)) {                                            \
    const Params<TYPE> p NANOSSM_COMMON_INIT;                                        \
    scan_kernel<TYPE, 8, false, true, false, STATES, false, nanossm::V8_LONG_STEPS>(p); \
  }
NANOSSM_FWD_PACKED_LONG_V8(nanossm_scan_fwd_packed_long_f16_v8, __half, true)
NANOSSM_FWD_PACKED_LONG_V8(nanossm_scan_fwd_packed_long_bf16_v8, __nv_bfloat16, true)
NANOSSM_FWD_PACKED_LONG_V8(nanossm_scan_fwd_packed_nostate_long_f16_v8, __half, false)
NANOSSM_FWD_PACKED_LONG_V8(nanossm_scan_fwd_packed_nostate_long_bf16_v8, __nv_bfloat16, false)
NANOSSM_ALL(bwd, NANOSSM_BWD, false, true, )
NANOSSM_ALL(bwd, NANOSSM_BWD, true, true, _packed)
NANOSSM_ALL(bwd, NANOSSM_BWD, true, false, _packed_nostate)
// The backward with carries by groups of chunks (v35), over packets (4 fp32 or 8 16-bit channels
// per lane): its look-back's chain sets the time of long sequences (1,65536,64,64: 1.26 us per
// chunk, docs/performance.md v34), as the forward's did before groups. Kernels of their own, so
// that the plain backward keeps its machine code (v19 compiled group_carry into it, and it lost).
// Their blocks after the first copy x and out after the group carry (LATE, v74: they run only
// over few tiles, groupChunks; H200, ratio to the copy, two pairs: bf16 1,65536,64,64 (G = 4)
// 2.95 -> 2.56, 2,8192,64,64 (G = 2) 2.61 -> 2.41, 2,1024,64,64 2.42-2.54 -> 2.33-2.35; fp32
// 1,262144,4,32 (G = 32) 2.90-2.94 either way).
NANOSSM_BWD_KERNEL(nanossm_scan_bwd_grouped_f32_v4, float, 4, false, true, true, true)
NANOSSM_BWD_KERNEL(nanossm_scan_bwd_grouped_f16_v8, __half, 8, false, true, true, true)
NANOSSM_BWD_KERNEL(nanossm_scan_bwd_grouped_bf16_v8, __nv_bfloat16, 8, false, true, true, true)
// The plain backward over packets whose blocks that look back copy x and out after their carry
// (v73, LATE in scan_kernel.cuh; core lateXY takes them over few tiles). Kernels of their own:
// as a runtime flag in the plain ones, the plans that do not take it lost 1-2% (f32 4,8192,64,64
// 2.01 -> 2.05 of the copy, 16,1024,16,128 2.01 -> 2.05).
NANOSSM_BWD_KERNEL(nanossm_scan_bwd_late_f32_v4, float, 4, false, true, false, true)
NANOSSM_BWD_KERNEL(nanossm_scan_bwd_late_f16_v8, __half, 8, false, true, false, true)
NANOSSM_BWD_KERNEL(nanossm_scan_bwd_late_bf16_v8, __nv_bfloat16, 8, false, true, false, true)
// The fp32 late backward over long chunks: 16 steps per thread (128-step chunks, 192 KB staged a
// block, one block of 8 warps a SM), for chains of few tiles (longChunks). Measured on the H200
// as a whole module so built (session 29 call 3, ratio to the copy, same run, 8 steps / 16):
// f32 1,65601,20,64 (10 tiles x 1026 chunks) 2.68 / 2.31, 1,65536,64,64 (32 x 1024) 2.19 /
// 2.16, but many tiles or short chains lost: 2,1024,64,64 2.11 / 2.26, 8,2048 2.03 / 2.08.
NANOSSM_BWD_KERNEL_AT(nanossm_scan_bwd_late_long_f32_v4, float, 4, false, true, false, true, nanossm::BWD_LONG_STEPS, 1)

// Pass 2 of three (kernels/chunk_prefix.cuh): one block of up to 32 warps per tile; VEC is the
// floats per lane of an aggregate (the scan's packet width). bwd: the tile holds the backward's
// lane layout (whole rows, or K tiles per row); chunk_len: steps per chunk.
#define NANOSSM_PREFIX(NAME, VEC)                                                                \
  extern "C" __global__ void __launch_bounds__(WARP * PREFIX_MAX_WARPS, 1)                       \
      NAME(NANOSSM_COMMON_PARAMS(float), int64_t bwd, int64_t K, int64_t chunk_len) {            \
    Params<float> p NANOSSM_COMMON_INIT;                                                         \
    p.K = K;                                                                                     \
    chunk_prefix<VEC>(p, bwd != 0, chunk_len);                                                   \
  }
NANOSSM_PREFIX(nanossm_chunk_prefix_v1, 1)
NANOSSM_PREFIX(nanossm_chunk_prefix_v4, 4)
NANOSSM_PREFIX(nanossm_chunk_prefix_v8, 8)

// Thread index and count of a launch of 32 x blockDim.y threads per block (core/cuda launches
// every kernel with 32-wide blocks).
__device__ __forceinline__ int64_t global_thread() {
  return (blockIdx.x * (int64_t)blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
}

// The look-back workspace's reset to the "unwritten" pattern (0xff bytes; n16: 16-byte words),
// in place of a memset: it lets the scan launched after it begin at once (allow_dependents), so
// the scan's staging overlaps the reset and the launch gap between them disappears (the scan
// waits for the reset's completion before it touches the workspace: grid_dependency_wait).
extern "C" __global__ void nanossm_ws_reset(uint4* ws, int64_t n16) {
  nanossm::allow_dependents();
  const int64_t stride = (int64_t)gridDim.x * blockDim.y * blockDim.x;
  for (int64_t i = global_thread(); i < n16; i += stride) ws[i] = make_uint4(~0u, ~0u, ~0u, ~0u);
}

// dA[b,t,r] = sum_k part[k][(b*T + t)*R + r] for K > 1 tiles per (b, r) row, in k order
// (deterministic); the backward kernel already applied the sign.
extern "C" __global__ void nanossm_dA_reduce(const float* part, float* dA, int64_t B, int64_t T,
                                             int64_t R, int64_t sdAb, int64_t sdAt, int64_t sdAr,
                                             int64_t K) {
  const int64_t n = B * T * R, stride = (int64_t)gridDim.x * blockDim.y * blockDim.x;
  for (int64_t i = global_thread(); i < n; i += stride) {
    float s = 0.f;
    for (int64_t k = 0; k < K; ++k) s += part[k * n + i];
    const int64_t r = i % R, t = (i / R) % T, b = i / R / T;
    dA[b * sdAb + t * sdAt + r * sdAr] = s;
  }
}

// Packed sequences with initial states: A[s-1] (the previous sequence's last step) also decays
// sequence k's h0, so dA[s-1, r] -= sum_c h0[k,r,c] * dh0[k,r,c] for every non-empty sequence with
// s > 0. One thread per (k, r); distinct sequences have distinct s - 1, so no two threads collide.
// Offsets outside [1, T) (malformed cu_seqlens) are skipped: no access out of bounds.
extern "C" __global__ void nanossm_dA_h0_term(const float* h0, const float* dh0, const void* cu,
                                              int64_t n_seqs, int64_t T, int64_t R, int64_t C,
                                              float* dA, int64_t sdAt, int64_t sdAr, int64_t flags) {
  const int64_t i = global_thread();
  if (i >= n_seqs * R) return;
  const int64_t k = i / R, r = i % R;
  auto at = [&](int64_t j) -> int64_t {
    return (flags & nanossm::F_SEQ_I32) ? static_cast<const int*>(cu)[j] : static_cast<const long long*>(cu)[j];
  };
  const int64_t s = at(k), e = at(k + 1);
  if (s <= 0 || s >= T || e <= s) return;
  float sum = 0.f;
  for (int64_t c = 0; c < C; ++c) sum += h0[(k * R + r) * C + c] * dh0[(k * R + r) * C + c];
  dA[(s - 1) * sdAt + r * sdAr] -= sum;
}
