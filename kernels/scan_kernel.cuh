// The scan kernel template of kernels/scan.cu (which describes the algorithm): forward or
// backward, plain or packed, over one element type and packet width. Device code only.
#pragma once

#include "scan_common.cuh"

namespace nanossm {

// flags (bit meanings mirrored by core/cuda/backend.go)
constexpr int64_t F_REVERSE = 1;     // scan order is t = T-1 .. 0
constexpr int64_t F_UNDECAYED = 2;   // h0 enters at a sequence's first step with decay 1 (backward)
constexpr int64_t F_SCALE_HT = 4;    // hT *= exp(A[t] - A[t-1]) at the last step t (dh0, backward)
constexpr int64_t F_NEG_DA = 8;      // dA = -(sum): the forward ran in reverse
constexpr int64_t F_SEQ_I32 = 16;    // cu_seqlens is int32 (else int64)

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

template <typename T, int VEC, bool BWD, bool PACKED>
__device__ __forceinline__ void scan_kernel(const Params<T>& P) {
  __shared__ float sh_agg[MAX_WARPS][WARP][VEC];
  __shared__ float sh_aend[MAX_WARPS][WARP];
  __shared__ int sh_reset[MAX_WARPS];  // the sub-chunk holds a sequence start

  const int lane = threadIdx.x, w = threadIdx.y, S = blockDim.y;
  const int64_t T_ = P.T, R = P.R, C = P.C, flags = P.flags;
  const bool reverse = flags & F_REVERSE, undecayed = flags & F_UNDECAYED;
  const float* h0 = P.h0;

  // (tile, chunk) in chunk-major order: chunk j of every tile has a lower block index than chunk
  // j + 1, and blocks are dispatched in index order, so a block only waits on running blocks.
  const int64_t tile = blockIdx.x % P.n_tiles, chunk = blockIdx.x / P.n_tiles;

  // lane -> (row = b*R + r, cv); seg_lane/seg_width describe the lanes summed into one dA
  const int64_t CV = C / VEC, rows = P.B * R;
  int64_t row, cv;
  int seg_lane = 0, seg_width = 1;
  if constexpr (!BWD) {
    const int64_t g = tile * WARP + lane;
    row = g / CV, cv = g % CV;
  } else if (CV <= WARP) {
    row = tile * (WARP / CV) + lane / CV, cv = lane % CV;
    seg_lane = static_cast<int>(cv), seg_width = static_cast<int>(CV);
    if (lane >= WARP / CV * CV) row = rows;  // the lanes that no whole row fits in
  } else {
    row = tile / P.K, cv = (tile % P.K) * WARP + lane;
    seg_lane = lane, seg_width = static_cast<int>(min(static_cast<int64_t>(WARP), CV - (tile % P.K) * WARP));
    if (cv >= CV) row = rows;
  }
  const bool active = row < rows;
  const int64_t r = active ? row % R : 0, b = active ? row / R : 0;
  const float* Ab = P.A + b * P.sA[0] + r * P.sA[2];
  const T* xb = P.x + b * P.sx[0] + r * P.sx[2] + cv * VEC * P.sx[3];
  T* ob = P.out + b * P.so[0] + r * P.so[2] + cv * VEC * P.so[3];
  // h0 / hT rows are contiguous (rows of states, R, C): row k of the states for (r, cv)
  auto state_off = [&](int64_t k) { return (k * R + r) * C + cv * VEC; };

  // a(tau): A in scan order, negated for reverse, so every decay is exp(a(later) - a(earlier)).
  auto a_at = [&](int64_t tau) -> float {
    const float v = Ab[(reverse ? T_ - 1 - tau : tau) * P.sA[1]];
    return reverse ? -v : v;
  };
  // a just before step tau.  Before step 0 it is A[-1] := 0 when an initial state decays in;
  // with no initial state (or an undecayed one) it is a(0): decay 1, every exponent <= 0.
  auto a_before = [&](int64_t tau) -> float {
    if (!active) return 0.f;
    if (tau > 0) return a_at(tau - 1);
    return (h0 && !undecayed) ? 0.f : a_at(0);
  };

  // Packed sequences in scan order: boundary i (0..N) and the state row of scan-order sequence i.
  const int64_t N = P.n_seqs;
  auto bound = [&](int64_t i) -> int64_t {
    const int64_t k = reverse ? N - i : i;
    const int64_t v = (flags & F_SEQ_I32) ? static_cast<int64_t>(__ldg(static_cast<const int*>(P.cu) + k))
                                          : static_cast<int64_t>(__ldg(static_cast<const long long*>(P.cu) + k));
    return reverse ? T_ - v : v;
  };
  auto seq_row = [&](int64_t i) { return reverse ? N - 1 - i : i; };

  // ---- phase 1: stage this thread's STEPS packets in shared memory (every copy in flight at
  // once, none held in registers), read its STEPS A values, fold a zero-carry aggregate.
  // Shared layout: row (w*STEPS + i), lane -> xs[i * WARP]; a warp's row is 32 adjacent packets.
  // The backward stages x and out the same way, in two more regions.
  extern __shared__ __align__(16) unsigned char smem[];
  const int64_t region = (int64_t)S * STEPS * WARP;
  Packet<T, VEC>* xs = reinterpret_cast<Packet<T, VEC>*>(smem) + (int64_t)w * STEPS * WARP + lane;
  Packet<T, VEC>* xos = xs + region;
  Packet<T, VEC>* yos = xs + 2 * region;
  const int64_t chunk_len = (int64_t)S * STEPS;
  const int64_t t0 = chunk * chunk_len;        // first step of the block (scan order)
  const int64_t ts = t0 + (int64_t)w * STEPS;  // first step of this thread
  // The state a sequence starts from, before its first input: h0[k] decayed (or not), or 0.
  auto start_state = [&](int64_t k, float d, float (&h)[VEC]) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) h[v] = 0.f;
    if (h0 && active) {
      const float s = undecayed ? 1.f : d;
#pragma unroll
      for (int v = 0; v < VEC; ++v) h[v] = s * h0[state_off(seq_row(k)) + v];
    }
  };
  float* const hT = P.hT;
  auto write_state = [&](int64_t k, const float (&st)[VEC], float scale) {
    // (k outside [0, N) only from malformed device offsets: skipped, never out of bounds)
    if (hT && active && (!PACKED || (k >= 0 && k < N))) {
#pragma unroll
      for (int v = 0; v < VEC; ++v) hT[state_off(k) + v] = scale * st[v];
    }
  };
  // an empty sequence's final state is its initial state (or 0)
  auto empty_state = [&](int64_t k) {
    if (hT && active) {
      float st[VEC];
      start_state(k, 1.f, st);
      write_state(seq_row(k), st, 1.f);
    }
  };
  // Packed sequences: one rolled walk over this warp's steps (warp-uniform) records which steps
  // start a sequence (smask) or end one (emask) and which sequence that is, so the unrolled loops
  // below only test bits (a walk inside them made the code too large for the instruction cache).
  // It runs before the staging copies are issued: behind 64 KB of copies its few dependent loads
  // of cu_seqlens would wait for all of them. Empty sequences get their final state here.
  __shared__ int64_t sh_start[MAX_WARPS][STEPS], sh_end[MAX_WARPS][STEPS];
  uint32_t smask = 0, emask = 0;
  if constexpr (PACKED) {
    if (ts < T_) {
      int64_t nb = warp_lower_bound(bound, N, ts), nbv = bound(nb);  // the next boundary
#pragma unroll 1
      for (int i = 0; i < STEPS && ts + i < T_; ++i) {
        const int64_t tau = ts + i;
        for (; nb < N && nbv == tau; ++nb) {
          const int64_t next = bound(nb + 1);
          if (next > tau) {
            smask |= 1u << i;
            sh_start[w][i] = nb;
          } else {
            empty_state(nb);
          }
          nbv = next;
        }
        if (nbv == tau + 1 && nb > 0) {
          emask |= 1u << i;
          sh_end[w][i] = nb - 1;
        }
        if (tau == T_ - 1) {
          for (int64_t e = nb; e < N; ++e) empty_state(e);  // empty sequences at the very end
        }
      }
    }
    __syncwarp();
  }
  float dec[STEPS];
  const float a_prev = ts < T_ ? a_before(ts) : 0.f;
  float a_last = a_prev;
#pragma unroll
  for (int i = 0; i < STEPS; ++i) {
    const int64_t tau = ts + i;
    if (active && tau < T_) {
      const int64_t t = reverse ? T_ - 1 - tau : tau;
      stage_packet<T, VEC>(&xs[i * WARP], xb + t * P.sx[1], P.sx[3]);
      if constexpr (BWD) {
        const int64_t base = b * P.sxo[0] + r * P.sxo[2] + cv * VEC * P.sxo[3];
        stage_packet<T, VEC>(&xos[i * WARP], P.xo + base + t * P.sxo[1], P.sxo[3]);
        const int64_t ybase = b * P.syo[0] + r * P.syo[2] + cv * VEC * P.syo[3];
        stage_packet<T, VEC>(&yos[i * WARP], P.yo + ybase + t * P.syo[1], P.syo[3]);
      }
      dec[i] = a_at(tau);
    } else {
      Packet<T, VEC> zero;
#pragma unroll
      for (int v = 0; v < VEC; ++v) zero.v[v] = from_f<T>(0.f);
      xs[i * WARP] = zero;
      dec[i] = a_last;  // past the end: decay 1, input 0, the state rides through unchanged
    }
    a_last = dec[i];
  }
  staged_wait();  // each thread reads back only the rows it staged: no barrier needed
  float h[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) h[v] = 0.f;
  bool reset = false;  // warp-uniform: a sequence starts in this thread's steps
  {
    float ap = a_prev;
#pragma unroll
    for (int i = 0; i < STEPS; ++i) {
      const float ai = dec[i];
      dec[i] = expf(ai - ap);
      ap = ai;
      const Packet<T, VEC> p = xs[i * WARP];
      if (PACKED && (smask >> i & 1)) {
        reset = true;
        start_state(sh_start[w][i], dec[i], h);
#pragma unroll
        for (int v = 0; v < VEC; ++v) h[v] += to_f(p.v[v]);
      } else {
#pragma unroll
        for (int v = 0; v < VEC; ++v) h[v] = fmaf(dec[i], h[v], to_f(p.v[v]));
      }
    }
  }
#pragma unroll
  for (int v = 0; v < VEC; ++v) sh_agg[w][lane][v] = h[v];
  sh_aend[w][lane] = a_last;
  if (lane == 0) sh_reset[w] = reset;
  __syncthreads();

  // Fold sub-chunk s's aggregate into a running state (a sub-chunk with a start replaces it).
  auto fold = [&](int s, float& a_end, float (&st)[VEC]) {
    const float d = expf(sh_aend[s][lane] - a_end);
    a_end = sh_aend[s][lane];
#pragma unroll
    for (int v = 0; v < VEC; ++v) st[v] = sh_reset[s] ? sh_agg[s][lane][v] : fmaf(d, st[v], sh_agg[s][lane][v]);
  };

  // ---- phase 2: the carry into the block (state at step t0 - 1): h0 for chunk 0, else a look-back
  // that every warp does for itself (no second barrier). Publication needs no flag or fence: the
  // workspace starts as the NaN pattern 0xffffffff, which arithmetic never produces (GPU NaNs are
  // canonical 0x7fffffff), and every 32-bit value is written once; a reader polls its own lane's
  // values until none is the pattern, and each word it sees is final.
  const float a_blk = t0 < T_ ? a_before(t0) : 0.f;
  bool block_reset = false, need_carry = !(PACKED && (smask & 1));
  for (int s = 0; s < S; ++s) {
    block_reset |= sh_reset[s];
    if (s < w && sh_reset[s]) need_carry = false;
  }
  float carry[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) carry[v] = (!PACKED && chunk == 0 && h0 && active) ? h0[state_off(b) + v] : 0.f;
  if (P.n_chunks > 1) {
    const int64_t n = P.n_chunks * P.n_tiles;
    float* aggs = reinterpret_cast<float*>(P.ws);
    float* incl = aggs + align256(n * WARP * VEC * 4) / 4;
    const bool last = chunk == P.n_chunks - 1;
    const int64_t me = chunk * P.n_tiles + tile;
    float agg[VEC], a_end = a_blk;
#pragma unroll
    for (int v = 0; v < VEC; ++v) agg[v] = 0.f;
    const bool publisher = w == S - 1 && !last;
    if (publisher) {
      // block aggregate over the S sub-chunks (all full: not the last chunk); publish it first,
      // so successors can look past this block while it looks back.  With a sequence start in
      // the block it is already an inclusive prefix.
      for (int s = 0; s < S; ++s) fold(s, a_end, agg);
      if (block_reset) {
        publish<VEC>(&incl[(me * WARP + lane) * VEC], agg);
      } else if (chunk > 0) {
        publish<VEC>(&aggs[(me * WARP + lane) * VEC], agg);
      }
    }
    if (chunk > 0 && active && (need_carry || (publisher && !block_reset))) {
      // Find the nearest earlier chunk j whose inclusive prefix P(j) is out, looking past chunks
      // whose aggregate is out; then replay P(j+1) .. P(chunk-1) with the very recurrence each
      // chunk uses for its own prefix, P(i) = exp(a_end(i) - a_end(i-1)) * P(i-1) + agg(i). The
      // carry is then bit-identical whichever path the timing allowed: results are reproducible.
      // (A chunk holding a sequence start publishes only its prefix: look-back stops there.)
      int64_t j = chunk - 1;
      float val[VEC];
      for (int spins = 0;;) {
        const int64_t id = (j * P.n_tiles + tile) * WARP + lane;
        if (poll<VEC>(&incl[id * VEC], val)) break;
        if (poll<VEC>(&aggs[id * VEC], val)) {
          --j;  // aggregate out, prefix not yet: look further back (chunk 0 is always a prefix)
          spins = 0;
          continue;
        }
        if (++spins > 2) __nanosleep(32);
      }
#pragma unroll
      for (int v = 0; v < VEC; ++v) carry[v] = val[v];
      // The aggregates to replay were all seen written: read them with plain L2 loads in
      // batches, issued together, so a deep replay costs one round trip per batch, not per chunk.
      // (batches of 8 words: more spill registers under the 3-blocks-per-SM budget)
      constexpr int BATCH = VEC == 1 ? 2 : (VEC >= 8 ? 1 : 8 / VEC);
      float a_prev_end = a_at((j + 1) * chunk_len - 1);
      for (int64_t i0 = j + 1; i0 < chunk; i0 += BATCH) {
        float vals[BATCH][VEC], ae[BATCH];
#pragma unroll
        for (int q = 0; q < BATCH; ++q) {
          const int64_t i = min(i0 + q, chunk - 1);
          load_cg<VEC>(&aggs[((i * P.n_tiles + tile) * WARP + lane) * VEC], vals[q]);
          ae[q] = i == chunk - 1 ? a_blk : a_at((i + 1) * chunk_len - 1);
        }
#pragma unroll
        for (int q = 0; q < BATCH; ++q) {
          if (i0 + q < chunk) {
            const float d = expf(ae[q] - a_prev_end);
            a_prev_end = ae[q];
#pragma unroll
            for (int v = 0; v < VEC; ++v) carry[v] = fmaf(d, carry[v], vals[q][v]);
          }
        }
      }
    }
    if (publisher && !block_reset) {
      const float d = expf(a_end - a_blk);
      float inc[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) inc[v] = fmaf(d, carry[v], agg[v]);
      publish<VEC>(&incl[(me * WARP + lane) * VEC], inc);
    }
  }

  // ---- phase 3: fold the sub-chunks before this warp, replay the steps with the true carry
  if (ts >= T_ || (!BWD && !active)) return;  // the backward keeps idle lanes for the dA sums
  {
    float ap = a_blk;
    for (int s = 0; s < w; ++s) fold(s, ap, carry);
  }
#pragma unroll
  for (int i = 0; i < STEPS; ++i) {
    const int64_t tau = ts + i;
    if (tau >= T_) break;  // warp-uniform
    const int64_t t = reverse ? T_ - 1 - tau : tau;
    const Packet<T, VEC> p = xs[i * WARP];
    // gin: this step's input as dA sees it (g, plus the final state's gradient where it joins)
    float gin[VEC];
#pragma unroll
    for (int v = 0; v < VEC; ++v) gin[v] = to_f(p.v[v]);
    if (PACKED && (smask >> i & 1)) {  // a sequence starts: its state restarts from its initial state
      float st[VEC];
      start_state(sh_start[w][i], dec[i], st);
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        carry[v] = st[v] + gin[v];
        if (undecayed) gin[v] += st[v];
      }
    } else {
#pragma unroll
      for (int v = 0; v < VEC; ++v) carry[v] = fmaf(dec[i], carry[v], gin[v]);
      if (BWD && !PACKED && undecayed && tau == 0 && h0 && active) {  // the carry held it already
#pragma unroll
        for (int v = 0; v < VEC; ++v) gin[v] += h0[state_off(b) + v];
      }
    }
    if (active) store_packet<T, VEC>(ob + t * P.so[1], P.so[3], carry);
    // the last step of a sequence writes its final state (times exp(A[t] - A[t-1]) for dh0)
    const bool ends = PACKED ? (emask >> i & 1) : tau == T_ - 1;
    if (hT && ends) {
      float scale = 1.f;
      if (flags & F_SCALE_HT) {
        const float prev = t > 0 ? Ab[(t - 1) * P.sA[1]] : 0.f;
        scale = active ? expf(Ab[t * P.sA[1]] - prev) : 0.f;
      }
      write_state(PACKED ? seq_row(sh_end[w][i]) : b, carry, scale);
    }
    if constexpr (BWD) {
      const Packet<T, VEC> px = xos[i * WARP], py = yos[i * WARP];
      float part = 0.f;
#pragma unroll
      for (int v = 0; v < VEC; ++v) part += gin[v] * to_f(py.v[v]) - to_f(px.v[v]) * carry[v];
      part = segment_sum(active ? part : 0.f, seg_lane, seg_width);
      if (active && seg_lane == 0) {
        if (flags & F_NEG_DA) part = -part;
        if (P.K == 1) {
          P.dA[b * P.sdA[0] + t * P.sdA[1] + r * P.sdA[2]] = part;
        } else {
          P.dA_part[(tile % P.K) * rows * T_ + (b * T_ + t) * R + r] = part;
        }
      }
    }
  }
}

}  // namespace nanossm
