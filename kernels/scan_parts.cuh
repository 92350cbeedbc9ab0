// Pieces of the scan kernels (kernels/scan.cu describes the algorithm): the flags and parameters
// every scan kernel takes, the look-back that finds a chunk's carry, and the backward's dA
// reduction. Device code only.
#pragma once

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

// Poll until done() (which reads its words again and checks them) holds; a short sleep after two
// tries. (The sleep is also a side effect: without one the loop could be assumed to end.)
template <typename Done>
__device__ __forceinline__ void spin_until(const Done& done) {
  for (int spins = 0; !done(); ++spins) {
    if (spins > 1) __nanosleep(32);
  }
}

// Fold a batch of chunks i0 .. i0+BATCH-1 (those before `end`) into a state, in order: each
// chunk's is exp(ae - a_prev) * state + its aggregate, a_prev then its ae (every prefix's
// recurrence).
template <int BATCH, int VEC>
__device__ __forceinline__ void fold_batch(const float (&vals)[BATCH][VEC], const float (&ae)[BATCH], int64_t i0,
                                           int64_t end, float& a_prev, float (&st)[VEC]) {
#pragma unroll
  for (int q = 0; q < BATCH; ++q) {
    if (i0 + q < end) {
      const float d = expf(ae[q] - a_prev);
      a_prev = ae[q];
#pragma unroll
      for (int v = 0; v < VEC; ++v) st[v] = fmaf(d, st[v], vals[q][v]);
    }
  }
}

// The carry into chunk `chunk` of tile `tile` (its state before its first step; a_blk: a there).
// Find the nearest earlier chunk j whose inclusive prefix P(j) is out, looking past chunks whose
// aggregate is out; then replay P(j+1) .. P(chunk-1) with the very recurrence each chunk uses for
// its own prefix, P(i) = exp(a_end(i) - a_end(i-1)) * P(i-1) + agg(i). The carry is then
// bit-identical whichever path the timing allowed: results are reproducible. (A chunk holding a
// sequence start publishes only its prefix: look-back stops there.)
template <int VEC, typename AEnd>
__device__ __forceinline__ void look_back(const float* aggs, const float* incl, int64_t chunk, int64_t tile,
                                          int64_t n_tiles, float a_blk, const AEnd& a_end,
                                          float (&carry)[VEC]) {
  const int lane = threadIdx.x;
  int64_t j = chunk - 1;
  float val[VEC];
  for (int spins = 0;;) {
    const int64_t id = (j * n_tiles + tile) * WARP + lane;
    if (poll<VEC>(&incl[id * VEC], val)) break;
    if (poll<VEC>(&aggs[id * VEC], val)) {
      --j;  // aggregate out, prefix not yet: look further back (a tile's or segment's first chunk
            // always publishes a prefix)
      spins = 0;
      continue;
    }
    if (++spins > 2) __nanosleep(32);  // (also a side effect: the loop cannot be assumed to end)
  }
#pragma unroll
  for (int v = 0; v < VEC; ++v) carry[v] = val[v];
  // The aggregates to replay were all seen written: read them with plain L2 loads in batches,
  // issued together, so a deep replay costs one round trip per batch, not per chunk. (batches of
  // 8 words: more spill registers under the 3-blocks-per-SM budget.) The 16-bit kernels, at 2
  // blocks per SM, replay 2 chunks (16 words) per batch: measured on the H200 against 1 (same
  // run, ratio to the copy): bf16 1,65536,64,64 1.69 -> 1.46, other shapes within 1%; 4 chunks
  // gave 1.51. Chunks per batch by packet width, NANOSSM_REPLAY_BATCH4 (fp32) and
  // NANOSSM_REPLAY_BATCH8 (16-bit), build variants.
#ifndef NANOSSM_REPLAY_BATCH4
#define NANOSSM_REPLAY_BATCH4 2
#endif
#ifndef NANOSSM_REPLAY_BATCH8
#define NANOSSM_REPLAY_BATCH8 2
#endif
  constexpr int BATCH = VEC == 1 ? 2 : (VEC >= 8 ? NANOSSM_REPLAY_BATCH8 : NANOSSM_REPLAY_BATCH4);
  if (j == chunk - 1) return;  // (the common case: no replay, and no load of a_end(j) to wait for)
  float a_prev_end = a_end(j);
  for (int64_t i0 = j + 1; i0 < chunk; i0 += BATCH) {
    float vals[BATCH][VEC], ae[BATCH];
#pragma unroll
    for (int q = 0; q < BATCH; ++q) {
      const int64_t i = min(i0 + q, chunk - 1);
      load_cg<VEC>(&aggs[((i * n_tiles + tile) * WARP + lane) * VEC], vals[q]);
      ae[q] = i == chunk - 1 ? a_blk : a_end(i);
    }
    fold_batch(vals, ae, i0, chunk, a_prev_end, carry);
  }
}

// The carry into chunk `chunk` by groups of G chunks (v19; core/plan.go picks G for long chains
// of the 16-bit forward):
// with g0 = chunk - chunk % G, the first chunk of its group,
//     carry = exp(a_blk - a_end(g0-1)) * P(g0-1) + comp,
//     comp  = the aggregates of chunks g0 .. chunk-1 folded from a zero state, in order,
// where P(g0-1) is the prefix the group's predecessor published (before chunk 0: the initial
// state h0, with a_end(-1) the a before step 0). Every chunk of a group waits on one prefix, and
// only a group's last chunk publishes a prefix anyone reads, so a tile's chain of prefixes takes
// one hop per G chunks, not one per chunk: measured (ratio to the copy with the chunk halved, same
// run) bf16 1,65536,64,64 1.44 -> 2.39 (16 tiles of 512 chunks: the hops set the time). The
// formula is fixed (a chunk never takes a shortcut through another prefix): results stay
// bit-identical run to run. Not for packed sequences (a start inside a group would end it).
// The aggregates come in batches of loads issued together, polled until all are written.
template <int VEC, typename AEnd, typename AStart, typename H0>
__device__ __forceinline__ void group_carry(const float* aggs, const float* incl, int64_t chunk, int64_t tile,
                                            int64_t n_tiles, int64_t G, float a_blk, const AEnd& a_end,
                                            const AStart& a_start, const H0& h0_at, float (&carry)[VEC]) {
  constexpr int BATCH = VEC == 1 ? 4 : 2;
  const int lane = threadIdx.x;
  auto at = [&](const float* base, int64_t i) { return &base[((i * n_tiles + tile) * WARP + lane) * VEC]; };
  const int64_t g0 = chunk - chunk % G;
  const float a_base = g0 == chunk ? a_blk : (g0 > 0 ? a_end(g0 - 1) : a_start());
  float comp[VEC], a_prev = a_base;
#pragma unroll
  for (int v = 0; v < VEC; ++v) comp[v] = 0.f;
  for (int64_t i0 = g0; i0 < chunk; i0 += BATCH) {
    float vals[BATCH][VEC], aes[BATCH];
#pragma unroll
    for (int q = 0; q < BATCH; ++q) aes[q] = i0 + q >= chunk - 1 ? a_blk : a_end(i0 + q);
    spin_until([&] {
      bool ok = true;
#pragma unroll
      for (int q = 0; q < BATCH; ++q) ok &= poll<VEC>(at(aggs, min(i0 + q, chunk - 1)), vals[q]);
      return ok;
    });
    fold_batch(vals, aes, i0, chunk, a_prev, comp);
  }
  float pg[VEC];
  if (g0 > 0) {
    spin_until([&] { return poll<VEC>(at(incl, g0 - 1), pg); });
  } else {
#pragma unroll
    for (int v = 0; v < VEC; ++v) pg[v] = h0_at(v);
  }
  const float d = expf(a_blk - a_base);
#pragma unroll
  for (int v = 0; v < VEC; ++v) carry[v] = fmaf(d, pg[v], comp[v]);
}

// group_carry spread over the block (v33; the grouped kernels over 4-channel lanes): the G - 1
// earlier aggregates a chunk of a group may need are read by up to PW warps at once,
// m = ceil((G-1)/PW) each, instead of by one warp two per round trip, so that large groups (a
// tile's chain of prefixes takes one hop per G chunks) cost each block a few round trips, not
// G/2. Warp s folds share s, chunks [g0 + s*m, min(g0 + s*m + m, chunk)), from a zero state into
// part[s]. After the block barrier the last warp alone folds the shares in order,
//     comp = sum over shares s of exp(a_blk - a_end(last chunk of s)) * part[s],
// the sum group_carry forms, in another order (a fixed one: results stay bit-identical run to
// run), then polls the group predecessor's prefix and forms the carry, which reaches the other
// warps through part[0] after a second barrier. The poll comes last: what the last warp does
// between the prefix's arrival and its carry is on the tile's chain, and the forms that polled
// first and then loaded the shares' a values ran the few-tile plans up to 1.5x slower; eight
// pollers per block (and four shares) cost 12% at G = 64 (docs/performance.md v33). At G = 2 this
// form costs 1.7% against group_carry (f32 1,65536,64,64: 1.082 -> 1.100), whose path beside it
// made these kernels spill.
// part: PW x 32 lanes x VEC floats of shared memory free after phase 1 (the caller's). Every
// thread of the block must call it (it holds two barriers).
template <int VEC, int PW, typename AEnd, typename AStart, typename H0>
__device__ __forceinline__ void group_carry_wide(const float* aggs, const float* incl, int64_t chunk, int64_t tile,
                                                 int64_t n_tiles, int64_t G, float a_blk, const AEnd& a_end,
                                                 const AStart& a_start, const H0& h0_at, float (*part)[WARP][VEC],
                                                 float (&carry)[VEC]) {
#ifndef NANOSSM_WIDE_BATCH
#define NANOSSM_WIDE_BATCH 2
#endif
  constexpr int BATCH = NANOSSM_WIDE_BATCH;
  const int lane = threadIdx.x, w = threadIdx.y, S = blockDim.y;
  auto at = [&](const float* base, int64_t i) { return &base[((i * n_tiles + tile) * WARP + lane) * VEC]; };
  const int64_t g0 = chunk - chunk % G;
  const int64_t pw = min(static_cast<int64_t>(S), static_cast<int64_t>(PW));
  const int64_t m = max(static_cast<int64_t>(1), (G - 1 + pw - 1) / pw);  // chunks per share
  const int shares = static_cast<int>((chunk - g0 + m - 1) / m);          // (block-uniform)
  // a at the end of chunk i (a_blk for the chunk before this one)
  auto ae_of = [&](int64_t i) { return i == chunk - 1 ? a_blk : a_end(i); };
  if (w < shares) {
    const int64_t lo = g0 + w * m, hi = min(lo + m, chunk);
    float st[VEC], a_prev = ae_of(lo);  // (the first fold: decay 1)
#pragma unroll
    for (int v = 0; v < VEC; ++v) st[v] = 0.f;
    for (int64_t i0 = lo; i0 < hi; i0 += BATCH) {
      float vals[BATCH][VEC], aes[BATCH];
#pragma unroll
      for (int q = 0; q < BATCH; ++q) aes[q] = ae_of(min(i0 + q, hi - 1));
      spin_until([&] {
        bool ok = true;
#pragma unroll
        for (int q = 0; q < BATCH; ++q) ok &= poll<VEC>(at(aggs, min(i0 + q, hi - 1)), vals[q]);
        return ok;
      });
      fold_batch(vals, aes, i0, hi, a_prev, st);
    }
#pragma unroll
    for (int v = 0; v < VEC; ++v) part[w][lane][v] = st[v];
  }
  __syncthreads();
  if (w == S - 1) {
    const float a_base = g0 == chunk ? a_blk : (g0 > 0 ? a_end(g0 - 1) : a_start());
    float comp[VEC], a_c = a_blk;
#pragma unroll
    for (int v = 0; v < VEC; ++v) comp[v] = 0.f;
    for (int sh = 0; sh < shares; ++sh) {
      const float ae = ae_of(min(g0 + (sh + 1) * m, chunk) - 1);
      const float d = sh == 0 ? 1.f : expf(ae - a_c);
      a_c = ae;
#pragma unroll
      for (int v = 0; v < VEC; ++v) comp[v] = fmaf(d, comp[v], part[sh][lane][v]);
    }
    // the group predecessor's prefix, polled once every share is in
    float pg[VEC];
    if (g0 > 0) {
      spin_until([&] { return poll<VEC>(at(incl, g0 - 1), pg); });
    } else {
#pragma unroll
      for (int v = 0; v < VEC; ++v) pg[v] = h0_at(v);
    }
    const float d = expf(a_blk - a_base);
#pragma unroll
    for (int v = 0; v < VEC; ++v) part[0][lane][v] = fmaf(d, pg[v], comp[v]);
  }
  __syncthreads();
#pragma unroll
  for (int v = 0; v < VEC; ++v) carry[v] = part[0][lane][v];
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
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const bool ok = active && i < nst;
    stage_issue<T, VEC>(&xs[i * WARP], held[i], px, sx[3], ok);
    if constexpr (BWD) {
      if (stage_xy) {
        stage_issue<T, VEC>(&xos[i * WARP], held_x[i], pxo, sxo[3], ok);
        stage_issue<T, VEC>(&yos[i * WARP], held_y[i], pyo, syo[3], ok);
      }
      pxo += dir * sxo[1], pyo += dir * syo[1];
    }
    if constexpr (!kSplitA) {
      prefetch_if(pa, ok && !use_tab);
      dec[i] = ldg_if(pa, ok && !use_tab);
      pa += da;
    }
    px += dx;
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

}  // namespace nanossm
