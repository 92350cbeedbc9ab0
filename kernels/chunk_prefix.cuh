// Pass 2 of the three-pass plan (kernels/scan.cu): the inclusive prefix of every chunk from the
// aggregates that pass 1 published,
//     P(c) = exp(a_end(c) - a_end(c-1)) * P(c-1) + agg(c),    c = 1 .. n_chunks - 2,
// (a_end(c): a at the chunk's last step, for the lane's row). P(0), and the prefix of every chunk
// that holds a sequence start (packed), came out of pass 1 already.
// Parallel over chunks: the chunks of a tile are split into G groups, one block each (block
// g * n_tiles + tile), and a group's chunks into one segment per warp. Each warp folds its segment
// from a zero state; the block combines the segments in warp order into the group's aggregate
// and publishes it (the look-back's unwritten-pattern protocol); the carry into a group is P(0)
// folded with the aggregates of the groups before it, in order (a block waits only on blocks
// with lower indices: dispatched earlier, so no deadlock); each warp then replays its segment
// from its true carry and publishes each prefix. Every combination runs in a fixed order:
// deterministic. Device code only.
#pragma once

#include "scan_parts.cuh"

namespace nanossm {

constexpr int PREFIX_MAX_WARPS = 16;

template <int VEC>
__device__ __forceinline__ void chunk_prefix(const Params<float>& P, bool bwd, int64_t chunk_len) {
  // chunks loaded per round trip: core/plan.go gives a warp ~8 chunks; this fits
  // the register budget of 512 threads (128 each)
  constexpr int BATCH = VEC == 8 ? 4 : 8;
  __shared__ float sh_seg[PREFIX_MAX_WARPS][WARP][VEC];
  __shared__ float sh_end[PREFIX_MAX_WARPS][WARP];
  __shared__ int sh_rst[PREFIX_MAX_WARPS][WARP];
  __shared__ float sh_carry[WARP][VEC];

  // Launched early (core/cuda: programmatic stream serialization) behind pass 1: let pass 3 launch
  // now, so its blocks stage x while this pass runs (they wait for its completion before they read
  // a prefix), and wait here for pass 1's aggregates.
  allow_dependents();
  grid_dependency_wait();
  const int lane = threadIdx.x, w = threadIdx.y, nw = blockDim.y;
  int64_t grp, tile;
  divmod(blockIdx.x, P.n_tiles, grp, tile);
  const int64_t G = gridDim.x / P.n_tiles, T_ = P.T, R = P.R;
  const bool reverse = P.flags & F_REVERSE, packed = P.cu != nullptr;
  const int64_t rows = P.B * R;
  const LaneMap lm = map_lane(bwd, tile, lane, P.C / VEC, rows, P.K);
  const bool active = lm.row < rows;
  int64_t b = 0, r = 0;
  if (active) divmod(lm.row, R, b, r);
  const float* Ab = P.A + b * P.sA[0] + r * P.sA[2];
  // a at the last step of chunk c, in scan order (negated in reverse), as the scan kernel sees it
  auto a_end = [&](int64_t c) -> float {
    return active ? a_scan(Ab, P.sA[1], T_, reverse, min((c + 1) * chunk_len, T_) - 1) : 0.f;
  };
  const int64_t n = P.n_chunks * P.n_tiles;
  float* aggs = reinterpret_cast<float*>(P.ws);
  float* incl = aggs + align256(n * WARP * VEC * 4) / 4;
  // group aggregates after the look-back's two arrays: per (group, tile) 32 lanes x (VEC + 2)
  float* gaggs = incl + align256(n * WARP * VEC * 4) / 4;
  auto at = [&](float* base, int64_t c) { return &base[((c * P.n_tiles + tile) * WARP + lane) * VEC]; };
  auto gat = [&](int64_t g) { return &gaggs[((g * P.n_tiles + tile) * WARP + lane) * (VEC + 2)]; };

  const int64_t m = P.n_chunks - 2;  // prefixes to compute: chunks 1 .. m
  const int64_t Lg = (m + G - 1) / G, g_lo = 1 + grp * Lg, g_hi = min(g_lo + Lg, m + 1);
  const int64_t L = (Lg + nw - 1) / nw, lo = min(g_lo + w * L, g_hi), hi = min(lo + L, g_hi);

  // Walk chunks [lo, hi) in batches of loads issued together; step(c, ae, val, is_prefix) gets
  // each chunk in order: its a_end, and its prefix (packed start) or its aggregate.
  auto walk = [&](auto&& step) {
    for (int64_t c0 = lo; c0 < hi; c0 += BATCH) {
      float val[BATCH][VEC], pre[BATCH][VEC], ae[BATCH];
#pragma unroll
      for (int q = 0; q < BATCH; ++q) {
        const int64_t c = min(c0 + q, hi - 1);
        load_cg<VEC>(at(aggs, c), val[q]);
        if (packed) {
          load_cg<VEC>(at(incl, c), pre[q]);
        } else {
#pragma unroll
          for (int v = 0; v < VEC; ++v) pre[q][v] = __uint_as_float(UNWRITTEN);
        }
        ae[q] = a_end(c);
      }
#pragma unroll
      for (int q = 0; q < BATCH; ++q) {
        if (c0 + q >= hi) break;
        bool is_prefix = true;
#pragma unroll
        for (int v = 0; v < VEC; ++v) is_prefix &= __float_as_uint(pre[q][v]) != UNWRITTEN;
        // (selected word by word: a choice between the two arrays' addresses put them in local
        // memory, and each load's spill store waited for it, so a batch's loads ran one round trip
        // after another: 25 us for a one-tile bf16 pack of 512 chunks, ncu in session 34)
        float x[VEC];
#pragma unroll
        for (int v = 0; v < VEC; ++v) x[v] = is_prefix ? pre[q][v] : val[q][v];
        step(c0 + q, ae[q], x, is_prefix);
      }
    }
  };
  // Fold a (state, a_end, replaces) triple into a running state, as the scan's chunks do.
  auto fold = [](float (&st)[VEC], float& a, const float* x, float ae, bool rst) {
    const float d = expf(ae - a);
    a = ae;
#pragma unroll
    for (int v = 0; v < VEC; ++v) st[v] = rst ? x[v] : fmaf(d, st[v], x[v]);
  };

  // phase a: this warp's segment from a zero state (a chunk with a sequence start replaces it)
  float h[VEC], ae_prev = a_end(lo - 1);
  bool rst = false;
#pragma unroll
  for (int v = 0; v < VEC; ++v) h[v] = 0.f;
  walk([&](int64_t, float ae, const float(&x)[VEC], bool is_prefix) {
    fold(h, ae_prev, x, ae, is_prefix);
    rst |= is_prefix;
  });
#pragma unroll
  for (int v = 0; v < VEC; ++v) sh_seg[w][lane][v] = h[v];
  sh_end[w][lane] = ae_prev;  // (an empty segment keeps a_end(lo - 1): decay 1, state 0)
  sh_rst[w][lane] = rst;
  __syncthreads();

  // The group's aggregate (warps in order), published for later groups; then the carry into the
  // group: P(0) folded with every earlier group's aggregate, in group order.
  if (w == 0) {
    if (grp < G - 1) {
      float agg[VEC], a = a_end(g_lo - 1);
      bool any = false;
#pragma unroll
      for (int v = 0; v < VEC; ++v) agg[v] = 0.f;
      for (int s = 0; s < nw; ++s) {
        fold(agg, a, sh_seg[s][lane], sh_end[s][lane], sh_rst[s][lane]);
        any |= sh_rst[s][lane];
      }
      float out[VEC + 2];
#pragma unroll
      for (int v = 0; v < VEC; ++v) out[v] = agg[v];
      out[VEC] = a, out[VEC + 1] = any ? 1.f : 0.f;
      publish<VEC + 2>(gat(grp), out);  // (relaxed at GPU scope, polled by ld_poll: as the look-back's, v64)
    }
    float carry[VEC], a = a_end(0);
    load_cg<VEC>(at(incl, 0), carry);
    // The earlier groups' aggregates, BATCH per round trip (loads issued together), folded in
    // group order. Written by earlier blocks: wait until every word of a batch is. (The sleep is
    // a side effect: without one the compiler may assume the loop ends at once.)
    for (int64_t g0 = 0; g0 < grp; g0 += BATCH) {
      float in[BATCH][VEC + 2];
      for (bool ok = false; !ok;) {
        ok = true;
#pragma unroll
        for (int q = 0; q < BATCH; ++q) ok &= poll<VEC + 2>(gat(min(g0 + q, grp - 1)), in[q]);
        if (!ok) __nanosleep(32);
      }
#pragma unroll
      for (int q = 0; q < BATCH; ++q) {
        if (g0 + q < grp) fold(carry, a, in[q], in[q][VEC], in[q][VEC + 1] != 0.f);
      }
    }
#pragma unroll
    for (int v = 0; v < VEC; ++v) sh_carry[lane][v] = carry[v];
  }
  __syncthreads();
  if (lo >= hi) return;

  // phase b: the carry into this warp's segment, P(lo - 1): the group's carry and the segments
  // before it in order
  float carry[VEC], a = a_end(g_lo - 1);
#pragma unroll
  for (int v = 0; v < VEC; ++v) carry[v] = sh_carry[lane][v];
  for (int s = 0; s < w; ++s) fold(carry, a, sh_seg[s][lane], sh_end[s][lane], sh_rst[s][lane]);

  // phase c: replay the segment from its carry, publishing each prefix pass 1 did not
  ae_prev = a_end(lo - 1);
  walk([&](int64_t c, float ae_c, const float(&x)[VEC], bool is_prefix) {
    fold(carry, ae_prev, x, ae_c, is_prefix);
    if (!is_prefix) publish<VEC>(at(incl, c), carry);
  });
}

}  // namespace nanossm
