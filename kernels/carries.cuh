// The carry into a chunk of the scan kernels (kernels/scan.cu describes the algorithm): the
// per-chunk look-back, and carries by groups of chunks in one warp (group_carry) or spread over
// the block (group_carry_wide). Device code only.
#pragma once

#include "scan_common.cuh"

namespace nanossm {

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
// PRE: a_m2 is a_end(chunk - 2), loaded with the block's copies (v54), and the aggregate of
// chunk - 1, polled on the way past it, is kept (v56): a walk of one chunk (most of the fp32
// backward's on long chains: session 21's trace probe) replays with no load at all, and one of two
// loads one value of A instead of two (its round trip went to DRAM on the chain's path).
template <int VEC, bool PRE = false, typename AEnd>
__device__ __forceinline__ void look_back(const float* aggs, const float* incl, int64_t chunk, int64_t tile,
                                          int64_t n_tiles, float a_blk, const AEnd& a_end,
                                          float (&carry)[VEC], float a_m2 = 0.f) {
  const int lane = threadIdx.x;
  int64_t j = chunk - 1;
  float val[VEC], agg1[VEC];
  for (int spins = 0;;) {
    const int64_t id = (j * n_tiles + tile) * WARP + lane;
    if (poll<VEC>(&incl[id * VEC], val)) break;
    if (poll<VEC>(&aggs[id * VEC], val)) {
      if constexpr (PRE) {
        if (j == chunk - 1) {
#pragma unroll
          for (int v = 0; v < VEC; ++v) agg1[v] = val[v];
        }
      }
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
  if constexpr (PRE) {
    if (j == chunk - 2) {  // (fold_batch's arithmetic for the one chunk: the same bits)
      const float d = expf(a_blk - a_m2);
#pragma unroll
      for (int v = 0; v < VEC; ++v) carry[v] = fmaf(d, carry[v], agg1[v]);
      return;
    }
  }
  auto ae_at = [&](int64_t i) { return PRE && i == chunk - 2 ? a_m2 : a_end(i); };
  float a_prev_end = ae_at(j);
  for (int64_t i0 = j + 1; i0 < chunk; i0 += BATCH) {
    float vals[BATCH][VEC], ae[BATCH];
#pragma unroll
    for (int q = 0; q < BATCH; ++q) {
      const int64_t i = min(i0 + q, chunk - 1);
      load_cg<VEC>(&aggs[((i * n_tiles + tile) * WARP + lane) * VEC], vals[q]);
      ae[q] = i == chunk - 1 ? a_blk : ae_at(i);
    }
    fold_batch(vals, ae, i0, chunk, a_prev_end, carry);
  }
}

// The carry handed from the warp that found it (from: it writes, then arrives) to the block's
// other warps (they wait, then read), through buf and named barrier 1 of S warps (barrier 0 is
// __syncthreads'): the producer/consumer pattern, arrive releasing, sync acquiring the writes.
// The writer does not wait for the readers: buf must not be written again in the block, and a
// block hands on once (a second hand-over's arrivals could join the first's count). With S = 1
// the writer's arrival alone (32 threads) completes the barrier.
template <int VEC>
__device__ __forceinline__ void hand_carry(bool from, int S, float (&carry)[VEC], float (*buf)[VEC]) {
  const int lane = threadIdx.x;
  __syncwarp();
  if (from) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) buf[lane][v] = carry[v];
    asm volatile("bar.arrive 1, %0;" ::"r"(S * WARP) : "memory");
  } else {
    asm volatile("bar.sync 1, %0;" ::"r"(S * WARP) : "memory");
#pragma unroll
    for (int v = 0; v < VEC; ++v) carry[v] = buf[lane][v];
  }
}

// (through a buffer of its own)
template <int VEC>
__device__ __forceinline__ void hand_carry(bool from, int S, float (&carry)[VEC]) {
  __shared__ float sh_hand[WARP][VEC];
  hand_carry<VEC>(from, S, carry, sh_hand);
}

// The state before a group's first chunk g0: the prefix its predecessor published (incl_at(i):
// this lane's words of chunk i), polled until out, or before chunk 0 the initial state.
template <int VEC, typename At, typename H0>
__device__ __forceinline__ void group_prefix(const At& incl_at, int64_t g0, const H0& h0_at, float (&pg)[VEC]) {
  if (g0 > 0) {
    spin_until([&] { return poll<VEC>(incl_at(g0 - 1), pg); });
  } else {
#pragma unroll
    for (int v = 0; v < VEC; ++v) pg[v] = h0_at(v);
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
    spin_until([&] { return poll_batch([&](int q) { return at(aggs, min(i0 + q, chunk - 1)); }, vals); });
    fold_batch(vals, aes, i0, chunk, a_prev, comp);
  }
  float pg[VEC];
  group_prefix([&](int64_t i) { return at(incl, i); }, g0, h0_at, pg);
  const float d = expf(a_blk - a_base);
#pragma unroll
  for (int v = 0; v < VEC; ++v) carry[v] = fmaf(d, pg[v], comp[v]);
}

// group_carry spread over the block (v33; the grouped kernels over 4-channel lanes, groups of 5
// chunks or more): the G - 1 earlier aggregates a chunk of a group may need are read by up to PW
// warps at once, m = ceil((G-1)/PW) each (BATCH a round trip), instead of by one warp, so that
// large groups (a tile's chain of prefixes takes one hop per G chunks) cost each block a few round
// trips, not G/2. Warp s folds share s, chunks [g0 + s*m, min(g0 + s*m + m, chunk)), from a zero state,
// scales it to the end of the chunk before this one and leaves it in part[s]:
//     part[s] = exp(a_blk - a_end(last chunk of s)) * (share s folded),
// the terms group_carry sums, grouped otherwise. After the block barrier the last warp adds the
// shares in order (a fixed order: results stay bit-identical run to run), then polls the group
// predecessor's prefix and forms the carry, which reaches the other warps through part[0] after a
// second barrier. What the last warp does between the prefix's arrival and its carry is on the
// tile's chain, so everything else comes before the poll: the a before the group is loaded first,
// and the shares come scaled (v34: 1 tile 1.48 -> 1.43, 4 tiles 1.24 -> 1.20). The forms that
// polled first and then loaded the shares' a values ran the few-tile plans up to 1.5x slower; a
// poll by the last warp while the others fold gained 1% in fp32 and lost 2% in bf16; eight pollers
// per block cost 12% at G = 64 (docs/performance.md v33, v34).
// part: PW x 32 lanes x VEC floats of shared memory free after phase 1 (the caller's). Every
// thread of the block must call it (it holds two barriers).
template <int VEC, int PW, int BATCH_ = 0, typename AEnd, typename AStart, typename H0>
__device__ __forceinline__ void group_carry_wide(const float* aggs, const float* incl, int64_t chunk, int64_t tile,
                                                 int64_t n_tiles, int64_t G, float a_blk, const AEnd& a_end,
                                                 const AStart& a_start, const H0& h0_at, float (*part)[WARP][VEC],
                                                 float (&carry)[VEC]) {
#ifndef NANOSSM_WIDE_BATCH
#define NANOSSM_WIDE_BATCH 2
#endif
  // (v37: the backward, 128 registers a thread, takes larger batches: fewer round trips a share)
  constexpr int BATCH = BATCH_ > 0 ? BATCH_ : NANOSSM_WIDE_BATCH;
  const int lane = threadIdx.x, w = threadIdx.y, S = blockDim.y;
  auto at = [&](const float* base, int64_t i) { return &base[((i * n_tiles + tile) * WARP + lane) * VEC]; };
  const int64_t g0 = chunk - chunk % G;
  const int64_t pw = min(static_cast<int64_t>(S), static_cast<int64_t>(PW));
  const int64_t m = max(static_cast<int64_t>(1), (G - 1 + pw - 1) / pw);  // chunks per share
  const int shares = static_cast<int>((chunk - g0 + m - 1) / m);          // (block-uniform)
  // a at the end of chunk i (a_blk for the chunk before this one)
  auto ae_of = [&](int64_t i) { return i == chunk - 1 ? a_blk : a_end(i); };
  // (the last warp's a before the group, loaded before anything waits)
  const float a_base = w == S - 1 ? (g0 == chunk ? a_blk : (g0 > 0 ? a_end(g0 - 1) : a_start())) : 0.f;
  if (w < shares) {
    const int64_t lo = g0 + w * m, hi = min(lo + m, chunk);
    float st[VEC], a_prev = ae_of(lo);  // (the first fold: decay 1)
#pragma unroll
    for (int v = 0; v < VEC; ++v) st[v] = 0.f;
    // (group_carry's loop over [g0, chunk); one helper for both changed the machine code of the
    // grouped kernels and the 16-bit forwards (8 kernels in v35's read-through, in two forms),
    // untimed, so each keeps its own)
    for (int64_t i0 = lo; i0 < hi; i0 += BATCH) {
      float vals[BATCH][VEC], aes[BATCH];
#pragma unroll
      for (int q = 0; q < BATCH; ++q) aes[q] = ae_of(min(i0 + q, hi - 1));
      spin_until([&] { return poll_batch([&](int q) { return at(aggs, min(i0 + q, hi - 1)); }, vals); });
      fold_batch(vals, aes, i0, hi, a_prev, st);
    }
    const float sc = hi == chunk ? 1.f : expf(a_blk - a_prev);
#pragma unroll
    for (int v = 0; v < VEC; ++v) part[w][lane][v] = sc * st[v];
  }
  float pg[VEC];
  __syncthreads();
  if (w == S - 1) {
    float comp[VEC];
#pragma unroll
    for (int v = 0; v < VEC; ++v) comp[v] = 0.f;
    for (int sh = 0; sh < shares; ++sh) {
#pragma unroll
      for (int v = 0; v < VEC; ++v) comp[v] += part[sh][lane][v];
    }
    // the group predecessor's prefix, polled once every share is in
    group_prefix([&](int64_t i) { return at(incl, i); }, g0, h0_at, pg);
    const float d = expf(a_blk - a_base);
#pragma unroll
    for (int v = 0; v < VEC; ++v) part[0][lane][v] = fmaf(d, pg[v], comp[v]);
  }
  __syncthreads();
#pragma unroll
  for (int v = 0; v < VEC; ++v) carry[v] = part[0][lane][v];
}

// The carry into a block of a grouped kernel (chunk > 0), for every thread of the block (it holds
// a barrier): group_carry in the last warp, handed to the others through sh_carry_s (the
// caller's WARP x VEC floats of shared memory, declared in the kernel so that the kernels keep
// their shared-memory layout) or the dead tables, or in the kernels with WIDE (their A and decay
// tables, tab_mem's TAB_FLOATS floats, dead after phase 1: a before the block comes from its own
// load) group_carry_wide for groups of 5+ chunks, its shares' sums in the tables, BATCH
// aggregates a round trip (0: NANOSSM_WIDE_BATCH). (Groups of up to 4 chunks keep group_carry
// there too: its one warp reads the 3 earlier aggregates at most in two round trips and skips the
// wide form's second barrier; f32 1,65536,64,64 at G = 2: 1.082 against 1.095, docs/performance.md
// v34.)
template <int VEC, bool WIDE, int TAB_FLOATS, int BATCH = 0, typename AEnd, typename AStart, typename H0>
__device__ __forceinline__ void block_group_carry(const float* aggs, const float* incl, int64_t chunk, int64_t tile,
                                                  int64_t n_tiles, int64_t group, float a_blk, const AEnd& a_end,
                                                  const AStart& a_start, const H0& h0_at, float* tab_mem,
                                                  float (*sh_carry_s)[VEC], float (&carry)[VEC]) {
  const int w = threadIdx.y, S = blockDim.y;
  if (WIDE && group > 4) {
    constexpr int PW = TAB_FLOATS / (WARP * VEC);
    static_assert(PW >= 1, "the tables hold at least one share");
    group_carry_wide<VEC, PW, BATCH>(aggs, incl, chunk, tile, n_tiles, group, a_blk, a_end, a_start, h0_at,
                                     reinterpret_cast<float(*)[WARP][VEC]>(tab_mem), carry);
  } else {  // the last warp finds the carry, the others take it
    // (in the wide kernels the carry goes through the dead tables too: no shared memory added;
    // nothing writes either buffer again, as hand_carry requires)
    float(*sh_carry)[VEC] = WIDE ? reinterpret_cast<float(*)[VEC]>(tab_mem) : sh_carry_s;
    if (w == S - 1) group_carry<VEC>(aggs, incl, chunk, tile, n_tiles, group, a_blk, a_end, a_start, h0_at, carry);
    hand_carry<VEC>(w == S - 1, S, carry, sh_carry);
  }
}

}  // namespace nanossm
