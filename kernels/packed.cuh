// Packed variable-length sequences (kernels/scan.cu describes them): the map of a block to its
// chunk of a segment, and the walk of cu_seqlens over a warp's steps. Device code only.
#pragma once

#include "scan_common.cuh"

namespace nanossm {

// Packed calls cut into segments (v29). One pack is one row of B*T steps per (r, c): few tiles,
// long chains, and a chunk's predecessor dispatched only n_tiles blocks before it, still loading
// when the chunk looks back. So the host asks (flag bits 16-23, packedSegments in
// core/plan_packed.go) for V <= 31 segments: segment v runs from the start of sequence
// floor(v*N/V) to that of the next segment, and is chunked from its own start; the chunk j of
// segment v is no one's successor when j = 0 (the segment starts with a sequence), so the
// segments' chains are independent.  Blocks take the chunks level by level, as the plain scan's
// order over (tile, chunk): level 0 holds every segment's chunk 0, and a chunk's predecessor is
// on a lower level, so on a block dispatched before it (no deadlock); V segments put about
// V * n_tiles blocks between them.
// From q (the block's index in that order): its look-back slot (segment v's chunks take slots
// P_v .. P_v + n_v - 1, P_v the chunks of the segments before it: within the ceil(T/L) + V - 1
// slots the host planned), its first step t0, its segment's end, and j. False: q is past every
// chunk. Every warp of the block computes it (the same loads, one round trip). The cuts are kept
// in [0, T] and in order even for malformed cu_seqlens, so that the slots never run out; lane v
// holds cut v (lanes 0 and V: 0 and T).
template <typename Bound>
__device__ __forceinline__ bool segment_chunk(const Bound& bound, int64_t N, int64_t T, int64_t L, int V, int64_t q,
                                              int64_t& slot, int64_t& t0, int64_t& end, int64_t& j) {
  constexpr unsigned ALL = 0xffffffffu;
  const int lane = threadIdx.x;
  int64_t s = lane == 0 ? 0 : (lane < V ? bound(lane * N / V) : T);
  s = min(max(s, static_cast<int64_t>(0)), T);
  // (the work before the block's copies: the common case takes the fewest dependent steps)
  const int64_t before = __shfl_up_sync(ALL, s, 1);
  if (!__all_sync(ALL, lane == 0 || before <= s)) {  // malformed: a running max puts them in order
#pragma unroll
    for (int d = 1; d < WARP; d <<= 1) {
      const int64_t o = __shfl_up_sync(ALL, s, d);
      if (lane >= d) s = max(s, o);
    }
  }
  const int64_t next = __shfl_down_sync(ALL, s, 1);
  const unsigned n = lane < V ? static_cast<unsigned>((next - s + L - 1) / L) : 0u;  // its chunks
  // The level of q: the last level whose first block (the chunks of the levels below) is <= q.
  // Segments of equal length (a pack of equal sequences): level q / (segments) at once.
  // (Tried: chunk j of a segment of n on level j * M / n, M the longest segment's chunks, so
  // that long chains spread over the launch: the uneven packs took 3% longer, v29.)
  auto first_of = [&](unsigned level) { return __reduce_add_sync(ALL, min(n, level)); };
  const unsigned live = __popc(__ballot_sync(ALL, n > 0));
  unsigned lo = live ? static_cast<unsigned>(q) / live : 0u, first = first_of(lo);
  unsigned has = __ballot_sync(ALL, n > lo);
  if (q < first || q >= first + __popc(has)) {  // unequal: a binary search
    unsigned hi = __reduce_max_sync(ALL, n);
    if (q >= first_of(hi)) return false;  // past every segment's last chunk
    lo = 0;
    while (hi - lo > 1) {
      const unsigned mid = (lo + hi) / 2;
      if (first_of(mid) <= q) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    first = first_of(lo);
    has = __ballot_sync(ALL, n > lo);
  }
  // the rank-th segment (in order) among those with a chunk at this level
  const unsigned rank = static_cast<unsigned>(q) - first;
  const int v = __ffs(__ballot_sync(ALL, (has >> lane & 1) && __popc(has & ((1u << lane) - 1)) == rank)) - 1;
  j = lo;
  slot = __reduce_add_sync(ALL, lane < v ? n : 0u) + lo;
  t0 = __shfl_sync(ALL, s, v) + static_cast<int64_t>(lo) * L;
  end = __shfl_sync(ALL, next, v);
  return true;
}

// Packed sequences (scan_kernel.cuh): one walk over the boundaries in a warp's NS steps from ts
// (warp-uniform) records which steps start a sequence (bit i of smask) or end one (emask), and
// the sequence of each such step in seq[i] (a step that starts and ends one, a sequence of one
// step, starts and ends the same: one array, 1 KB of shared memory less than two, which kept the
// packed fp32 forward with states at 3 blocks per SM), so that the kernel's loops only test bits
// (a walk inside them made the code too large for the instruction cache). bound(i) is boundary i (0..N) in scan
// order; empty(k) writes empty sequence k's final state. The kernel runs it while its staging
// copies fly (v30; before, it ran first, and the copies waited for its round trips). The walk
// reads 32 boundaries at once, one per lane, and takes them by shuffles: with N < 32 sequences
// every boundary in one round trip, the search included; with more, the search's round trips and
// one for the 32 boundaries from the first one at or after ts (a boundary past them is loaded on
// its own).
// lim: the end of the block's steps (its segment's end, segment_chunk; else T).
template <int NS, typename Bound, typename Empty>
__device__ __forceinline__ void packed_walk(const Bound& bound, int64_t N, int64_t ts, int64_t T, int64_t lim,
                                            const Empty& empty, int64_t* seq, uint32_t& smask,
                                            uint32_t& emask) {
  if (ts < lim) {
    const int lane = threadIdx.x;
    int64_t nb, base, win;  // lane l holds boundary base + l (those up to N)
    if (N < WARP) {
      base = 0;
      win = lane <= N ? bound(lane) : 0;
      // the first boundary >= ts, or N (as warp_lower_bound: the last is taken as the end)
      nb = __ffs(__ballot_sync(0xffffffffu, lane == N || (lane < N && win >= ts))) - 1;
    } else {
      nb = warp_lower_bound(bound, N, ts);
      base = nb;
      win = nb + lane <= N ? bound(nb + lane) : 0;
    }
    auto bnd = [&](int64_t i) {  // boundary i (warp-uniform i, base <= i <= N)
      return i - base < WARP ? __shfl_sync(0xffffffffu, win, static_cast<int>(i - base)) : bound(i);
    };
    // The walk goes from boundary to boundary, not step by step (v48): the steps of a warp hold
    // none in most warps, and the step loop cost every warp ~30 instructions a step in the
    // kernels with states (empty sequences, ends; bf16 packed forward 8,2048,64,64: 20% more
    // instructions than the kernel without states). The boundaries that matter lie in
    // [ts, end]: one at v > ts ends the sequence before the first boundary of value v at step
    // v - 1; one at v < end starts that sequence at step v, or is an empty sequence when the
    // boundary after it is v too.
    // (lo: the least value the next boundary may take, so that malformed device offsets, not in
    // order or out of range, end the walk: every index stays in the warp's steps)
    const int64_t end = min(ts + static_cast<int64_t>(NS), lim);
    int64_t nbv = bnd(nb), lo = ts;  // nbv: boundary nb, the first not yet taken
#pragma unroll 1
    while (nbv >= lo && nbv <= end) {
      const int i = static_cast<int>(nbv - ts);
      if (nbv > ts && nb > 0) {
        emask |= 1u << (i - 1);
        seq[i - 1] = nb - 1;
      }
      if (nbv == end || nb == N) break;
      const int64_t v = nbv;
      // (rolled, as the loop over empty sequences below: unrolled 16 times by the compiler in
      // the kernels with states, each copy an empty sequence's state code)
#pragma unroll 1
      for (; nb < N && nbv == v; ++nb) {
        const int64_t next = bnd(nb + 1);
        if (next > v) {
          smask |= 1u << i;
          seq[i] = nb;
        } else {
          empty(nb);
        }
        nbv = next;
      }
      lo = v + 1;
    }
    if (end == T) {  // (the warp holds step T - 1: lim is T)
#pragma unroll 1
      for (int64_t e = nb; e < N; ++e) empty(e);  // empty sequences at the very end
    }
  }
  __syncwarp();
}

// The packed forward's rolled step loop (v32): the warps with a sequence start in their steps
// (phase 1), or a start or an end (phase 3), a few in a launch, take it; the others run the
// plain scan's unrolled loops, with no code for starts and ends between their steps. A rolled
// loop cannot index the unrolled loops' decays: decay_at(i, a) takes step i's again (the same
// bits). start_at(i, d, st) writes into st the state a sequence starting at step i restarts from.
// It runs the thread's nst staged steps from the state h (phase 1: zero, folding the aggregate;
// phase 3: the true carry), out_step(i, h) after each (phase 3 stores step i's output, and a
// final state where a sequence ends; phase 1 nothing).
template <typename T, int VEC, typename Decay, typename Start, typename Out>
__device__ __forceinline__ void packed_steps_rolled(const Packet<T, VEC>* xs, int nst, uint32_t smask, float a_prev,
                                                    const Decay& decay_at, const Start& start_at, const Out& out_step,
                                                    float (&h)[VEC]) {
  float al = a_prev;
#pragma unroll 1
  for (int i = 0; i < nst; ++i) {
    float xf[VEC];
    unpack(xs[i * WARP], xf);
    const float d = decay_at(i, al);
    if (smask >> i & 1) {
      start_at(i, d, h);
#pragma unroll
      for (int v = 0; v < VEC; ++v) h[v] += xf[v];
    } else {
#pragma unroll
      for (int v = 0; v < VEC; ++v) h[v] = fmaf(d, h[v], xf[v]);
    }
    out_step(i, h);
  }
}

}  // namespace nanossm
