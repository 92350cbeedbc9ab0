// Pieces of the scan kernels (kernels/scan.cu describes the algorithm): the flags and parameters
// every scan kernel takes, the A table, phase 1's copies and the backward's dA reduction; the
// carry into a chunk is in carries.cuh. Device code only.
#pragma once

#include "carries.cuh"
#include "scan_common.cuh"

namespace nanossm {

// flags (bit meanings mirrored by core/cuda/backend.go)
constexpr int64_t F_REVERSE = 1;     // scan order is t = T-1 .. 0
constexpr int64_t F_UNDECAYED = 2;   // h0 enters at a sequence's first step with decay 1 (backward)
constexpr int64_t F_SCALE_HT = 4;    // hT *= exp(A[t] - A[t-1]) at the last step t (dh0, backward)
constexpr int64_t F_NEG_DA = 8;      // dA = -(sum): the forward ran in reverse
constexpr int64_t F_SEQ_I32 = 16;    // cu_seqlens is int32 (else int64)
constexpr int64_t F_AGG_ONLY = 32;   // pass 1 of 3: publish chunk aggregates only (chunk 0: all)
constexpr int64_t F_PREFIXED = 64;   // pass 3 of 3: every prefix is out; chunk 0 is done
// bits 8-15: the carry group G (group_carry; 0 or 1: the per-chunk look-back), single pass only
constexpr int F_GROUP_SHIFT = 8;
// bits 16-23: packed calls, single pass: the segments V the pack is cut into (segment_chunk;
// 0 or 1: one row of chunks)
constexpr int F_SEG_SHIFT = 16;

template <typename E>  // element type of x and out
struct Params {
  const float* A;
  const E* x;  // the scanned input (g in the backward)
  E* out;      // the scan (dx in the backward)
  const float* h0;
  float* hT;
  char* ws;
  const void* cu;
  int64_t n_seqs, B, T, R, C;
  int64_t sA[3], sx[4], so[4];
  int64_t flags, n_chunks, n_tiles;
  // backward only
  const E* xo;  // the forward's x
  const E* yo;  // the forward's out
  float* dA;
  float* dA_part;  // K > 1: partial sums, (K, B*T*R)
  int64_t sxo[4], syo[4], sdA[3], K;
};

// a(tau): A of row Ab (step stride sAt) in scan order, negated in reverse, so that every decay is
// exp(a(later) - a(earlier)). The scan kernel and pass 2 of three (chunk_prefix.cuh) share it:
// their chunk ends must agree bit for bit.
__device__ __forceinline__ float a_scan(const float* Ab, int64_t sAt, int64_t T, bool reverse, int64_t tau) {
  const float v = Ab[(reverse ? T - 1 - tau : tau) * sAt];
  return reverse ? -v : v;
}

// The A table of one warp (scan_kernel.cuh): row q (its rows are consecutive, q = row - the
// first lane's row) holds A before the warp's first step ts (entry 0) and at its NS steps, copied
// into shared memory by 4-byte asynchronous copies that the x copies' wait covers. Every lane must
// be active (each row up to the warp's last then has a lane); row q's A pointer comes from the
// first lane holding row q by a shuffle, not from a (b, r) division per entry (v18).
template <int NS, int ROWS>
__device__ __forceinline__ void issue_a_table(float (*tab)[NS + 1], int q_row, const float* Ab, int64_t sAt,
                                              int64_t T, bool reverse, int64_t ts) {
  constexpr int N = ROWS * (NS + 1);
  const int lane = threadIdx.x;
  int first[ROWS];
#pragma unroll
  for (int q = 0; q < ROWS; ++q) first[q] = __ffs(__ballot_sync(0xffffffffu, q_row == q)) - 1;
#pragma unroll
  for (int e0 = 0; e0 < N; e0 += WARP) {
    const int e = e0 + lane, q = min(e / (NS + 1), ROWS - 1), s = e % (NS + 1);
    int src_lane = first[0];
#pragma unroll
    for (int k = 1; k < ROWS; ++k) src_lane = q == k ? first[k] : src_lane;
    const float* Aq = reinterpret_cast<const float*>(
        __shfl_sync(0xffffffffu, reinterpret_cast<uintptr_t>(Ab), src_lane < 0 ? 0 : src_lane));
    const int64_t tau = s == 0 ? (ts > 0 ? ts - 1 : 0) : ts + s - 1;
    if (e >= N) continue;  // (after the shuffle: every lane takes part in it)
    const bool ok = src_lane >= 0 && tau < T;
    const float* src = Aq + (reverse ? T - 1 - tau : tau) * sAt;
    const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(&tab[q][s]));
    asm volatile("{ .reg .pred p; setp.eq.u32 p, %2, 0; cp.async.ca.shared.global [%0], [%1], 4, p; }" ::"r"(d),
                 "l"(src), "r"(unsigned(ok))
                 : "memory");
  }
}

// The decays of a warp's table (v17): entry (q, s) is exp(a(s) - a(s-1)) into step s of row q,
// with a in scan order (negated in reverse) and a(-1) = before(q); 1 past the thread's nst steps.
// One expf per entry, computed by the warp's lanes together, where every lane of a row computed
// the same NS of them before. The caller syncs the warp before reading it.
template <int NS, int ROWS, typename Before>
__device__ __forceinline__ void fill_decay_table(const float (*a)[NS + 1], float (*d)[NS], bool reverse, int nst,
                                                 const Before& before) {
  const float sgn = reverse ? -1.f : 1.f;
#pragma unroll
  for (int e = threadIdx.x; e < ROWS * NS; e += WARP) {
    const int q = e / NS, s = e % NS;
    const float prev = s == 0 ? before(q) : sgn * a[q][s];
    d[q][s] = s < nst ? expf(sgn * a[q][s + 1] - prev) : 1.f;
  }
}

// A lane's initial and final states (rows of (R, C) floats; h0 or hT null: none) and the state
// row of a packed call's scan-order sequence i (of N). st0: the lane's offset in a row (32 bits
// in the packed forward: scan_kernel.cuh).
template <int VEC, bool PACKED, typename StOff>
struct LaneStates {
  const float* h0;
  float* hT;
  int64_t N, R, C;
  StOff st0;
  bool reverse, undecayed, active;

  __device__ __forceinline__ int64_t state_off(int64_t k) const { return k * R * C + st0; }
  __device__ __forceinline__ int64_t seq_row(int64_t i) const { return reverse ? N - 1 - i : i; }
  // The state a sequence starts from, before its first input: h0[k] decayed (or not), or 0.
  __device__ __forceinline__ void start(int64_t k, float d, float (&h)[VEC]) const {
#pragma unroll
    for (int v = 0; v < VEC; ++v) h[v] = 0.f;
    if (h0 && active) {
      const float s = undecayed ? 1.f : d;
#pragma unroll
      for (int v = 0; v < VEC; ++v) h[v] = s * h0[state_off(seq_row(k)) + v];
    }
  }
  // A final state (offset: state_off of its row; k: that row, checked when packed: outside [0, N)
  // only from malformed device offsets, skipped, never out of bounds).
  __device__ __forceinline__ void write(int64_t k, int64_t offset, const float (&st)[VEC], float scale) const {
    if (hT && active && (!PACKED || (k >= 0 && k < N))) {
#pragma unroll
      for (int v = 0; v < VEC; ++v) hT[offset + v] = scale * st[v];
    }
  }
  // an empty sequence's final state: its initial state (or 0)
  __device__ __forceinline__ void write_start(int64_t k) const {
    float st[VEC];
    start(k, 1.f, st);
    write(seq_row(k), state_off(seq_row(k)), st, 1.f);
  }
};

// The backward's NS copies of x and out into a thread's rows of xos and yos, over asynchronous
// copies (kTwoGroups: nothing held in registers); the step pointers pxo and pyo walk by dir.
template <typename T, int VEC, int NS>
__device__ __forceinline__ void issue_xy_async(Packet<T, VEC>* xos, Packet<T, VEC>* yos, const T* pxo, const T* pyo,
                                               const int64_t (&sxo)[4], const int64_t (&syo)[4], int64_t dir,
                                               bool active, int nst) {
  Packet<T, VEC> unused;
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const bool ok = active && i < nst;
    stage_issue<T, VEC>(&xos[i * WARP], unused, pxo, sxo[3], ok);
    stage_issue<T, VEC>(&yos[i * WARP], unused, pyo, syo[3], ok);
    pxo += dir * sxo[1], pyo += dir * syo[1];
  }
}

// Phase 1's copies of one thread (scan_kernel.cuh): its NS packets of x (the backward: of g, x
// and out) into its shared rows, and without the A table each step's A into dec[] (in the loop of
// copies, or with kSplitA in a loop of its own after them). Every load is issued before any is
// consumed (see stage_issue). A step past the thread's steps (nst), or an idle lane, stages zeros
// and reads nothing (predicated, not a branch per step). The pointers walk by increments (dir:
// +1, or -1 in reverse; dx and da: x's and A's per step); narrow packets are held in registers
// (held, held_x, held_y) until the kernel stores them.
template <typename T, int VEC, int NS, bool BWD, bool kSplitA>
__device__ __forceinline__ void issue_steps(Packet<T, VEC>* xs, Packet<T, VEC>* xos, Packet<T, VEC>* yos,
                                            Packet<T, VEC> (&held)[NS], Packet<T, VEC> (&held_x)[BWD ? NS : 1],
                                            Packet<T, VEC> (&held_y)[BWD ? NS : 1], const T* px, const T* pxo,
                                            const T* pyo, const int64_t (&sx)[4], const int64_t (&sxo)[4],
                                            const int64_t (&syo)[4], int64_t dir, int64_t dx, bool active, int nst,
                                            bool stage_xy, bool use_tab, const float* pa, int64_t da, float (&dec)[NS]) {
  // The backward over asynchronous copies (kStaged2) issues g first, as a group of its own with
  // the A table's copies before it, then x and out as a second: phase 1 needs g alone and waits
  // for the first group only (staged_wait_g), so the fold, the aggregate's publication and the
  // look-back overlap the landing of x and out, which phase 3 waits for (staged_wait). (A LATE
  // block that looks back passes stage_xy false and issues them after its carry: v73.)
  constexpr bool kStaged2 = kTwoGroups<BWD, T, VEC>;
  // step i's x and out (the backward's), the pointers then one step on
  auto issue_xy = [&](int i, bool ok) {
    if (stage_xy) {
      stage_issue<T, VEC>(&xos[i * WARP], held_x[i], pxo, sxo[3], ok);
      stage_issue<T, VEC>(&yos[i * WARP], held_y[i], pyo, syo[3], ok);
    }
    pxo += dir * sxo[1], pyo += dir * syo[1];
  };
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const bool ok = active && i < nst;
    stage_issue<T, VEC>(&xs[i * WARP], held[i], px, sx[3], ok);
    if constexpr (BWD && !kStaged2) issue_xy(i, ok);
    if constexpr (!kSplitA) {
      prefetch_if(pa, ok && !use_tab);
      dec[i] = ldg_if(pa, ok && !use_tab);
      pa += da;
    }
    px += dx;
  }
  if constexpr (kStaged2) {
    staged_commit();
    if (stage_xy) issue_xy_async<T, VEC, NS>(xos, yos, pxo, pyo, sxo, syo, dir, active, nst);
    staged_commit();  // (empty when a LATE block issues them after its carry)
  }
  if (kSplitA && !use_tab) {
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const bool ok = active && i < nst;
      prefetch_if(pa, ok);
      dec[i] = ldg_if(pa, ok);
      pa += da;
    }
  }
}

// The backward's dA at one warp's steps from each lane's share of it (dpart[i], step ts + i).
// The shares go through shared memory (rows XOR-swizzled by step, so the reads below hit distinct
// banks) and one lane sums each output over the lanes of its row, in lane order: deterministic,
// and a step costs a store and a few loads instead of a shuffle tree per step.
// red: NS x WARP floats of this warp's shared memory. lim: the end of the block's steps, as
// packed_walk's (a segment's last chunk leaves the steps past it to the next segment's blocks).
template <int NS, typename T>
__device__ __forceinline__ void reduce_dA(const Params<T>& P, const float (&dpart)[NS], float* red, int64_t tile,
                                          int64_t ts, int64_t lim, int64_t CV, int64_t rows) {
  const int lane = threadIdx.x;
  auto sh_red = [&](int i, int l) -> float& { return red[i * WARP + l]; };
  const int nsteps = static_cast<int>(min(static_cast<int64_t>(NS), lim - ts));  // (lim: as packed_walk's)
  __syncwarp();  // red may alias rows other lanes of the warp were still reading
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    if (i < nsteps) sh_red(i, lane ^ i) = dpart[i];
  }
  __syncwarp();
  const bool reverse = P.flags & F_REVERSE;
  const float sign = (P.flags & F_NEG_DA) ? -1.f : 1.f;  // the forward ran in reverse
  auto step_t = [&](int i) { return reverse ? P.T - 1 - (ts + i) : ts + i; };
  if (CV <= WARP) {  // whole rows: WARP / CV per tile, one output per (row, step)
    const int cvi = static_cast<int>(CV), per = WARP / cvi;
    for (int o = lane; o < per * NS; o += WARP) {
      const int q = o / NS, i = o % NS;
      const int64_t row = tile * per + q;
      if (i >= nsteps || row >= rows) continue;
      float s = 0.f;
      for (int c = 0; c < cvi; ++c) s += sh_red(i, (q * cvi + c) ^ i);
      int64_t b, r;
      divmod(row, P.R, b, r);
      P.dA[b * P.sdA[0] + step_t(i) * P.sdA[1] + r * P.sdA[2]] = sign * s;
    }
  } else {  // K tiles share one row: this tile's partial sum, one per step
    int64_t row, k;
    divmod(tile, P.K, row, k);
    const int width = static_cast<int>(min(static_cast<int64_t>(WARP), CV - k * WARP));
    if (lane < nsteps && row < rows) {
      float s = 0.f;
      for (int c = 0; c < width; ++c) s += sh_red(lane, c ^ lane);
      int64_t b, r;
      divmod(row, P.R, b, r);
      P.dA_part[k * rows * P.T + (b * P.T + step_t(lane)) * P.R + r] = sign * s;
    }
  }
}

// Fold the aggregates of sub-chunks 0 .. n-1 (sh_agg, sh_aend: one per warp, this lane's words)
// into a running state st whose A ends at a_end, in order; a sub-chunk holding a sequence start
// (reset(s)) replaces it. UNROLL (v57): over the NW sub-chunks a block can have, every one's words
// read and its fold kept where s < n, so that their shared-memory loads issue together (a branch
// per sub-chunk kept each one's loads behind it: a round trip each). The same arithmetic.
template <int NW, int VEC, bool UNROLL, typename Reset>
__device__ __forceinline__ void fold_subchunks(int n, const float (*sh_agg)[WARP][VEC], const float (*sh_aend)[WARP],
                                               const Reset& reset, float& a_end, float (&st)[VEC]) {
  const int lane = threadIdx.x;
  auto fold = [&](int s, float& ae, float (&t)[VEC]) {
    const float d = expf(sh_aend[s][lane] - ae);
    ae = sh_aend[s][lane];
#pragma unroll
    for (int v = 0; v < VEC; ++v) t[v] = reset(s) ? sh_agg[s][lane][v] : fmaf(d, t[v], sh_agg[s][lane][v]);
  };
  if constexpr (UNROLL) {
#pragma unroll
    for (int s = 0; s < NW; ++s) {
      float ae = a_end, t[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) t[v] = st[v];
      fold(s, ae, t);
      const bool on = s < n;
      a_end = on ? ae : a_end;
#pragma unroll
      for (int v = 0; v < VEC; ++v) st[v] = on ? t[v] : st[v];
    }
  } else {
    for (int s = 0; s < n; ++s) fold(s, a_end, st);
  }
}

}  // namespace nanossm
