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
// joins g at that step. dA's sum over c runs across the lanes of one (b, r) in a fixed order.
//
// Decomposition
//   lane   = VEC consecutive channels of one (b, r): a 16-byte packet when the layout allows
//            (VEC = 4 for fp32, 8 for fp16/bf16; stride_c == 1, C % VEC == 0, aligned),
//            otherwise one channel (VEC = 1).
//   tile   = 32 lanes (one warp wide).  A block is 32 x S threads: S warps stacked along T.
//            Forward: lanes are consecutive (b, r, c/VEC).  Backward: a tile holds whole (b, r)
//            rows of CV = C/VEC lanes (32/CV of them) or, when CV > 32, K = ceil(CV/32) tiles
//            share one row and write partial sums of dA that nanossm_dA_reduce adds up.
//   chunk  = S * STEPS consecutive steps; warp w of a block owns steps [w*STEPS, (w+1)*STEPS).
// Each thread stages its STEPS packets in shared memory with asynchronous copies (all in flight
// at once, holding no registers), folds them into a zero-carry aggregate, the block combines the
// S aggregates in shared memory, and when T needs more than one chunk, chunks pass carries
// through a deterministic decoupled look-back (single pass: x is read once and out written once;
// results are bit-identical run to run).  With the carry known, each thread replays its STEPS
// steps from shared memory and writes out.  Blocks are numbered chunk-major, so a block only
// waits on blocks dispatched before it: no deadlock.
//
// Packed variable-length sequences (PACKED, B = 1): at a sequence start the state restarts from
// h0[k] (decayed by exp(A[s] - A[s-1]), as SPEC defines) or 0. A sub-chunk or chunk holding a
// start has an aggregate that no earlier carry reaches: it is published straight away as an
// inclusive prefix, so look-back never passes a sequence start, and a warp whose steps begin
// after a start in its own block skips the look-back.  Each warp finds its first sequence with
// a 32-way search of cu_seqlens, overlapped with its staging copies.
//
// Every parameter is 64 bits wide: gorgonia.org/cu copies kernel arguments as 8-byte words.
// The parameter order is part of the contract with core/cuda/backend.go.

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

using nanossm::BWD_MAX_WARPS;
using nanossm::MAX_WARPS;
using nanossm::MIN_BLOCKS;
using nanossm::Params;
using nanossm::scan_kernel;
using nanossm::WARP;

// Entry points: nanossm_scan_{fwd,bwd}[_packed]_<dtype>_v<VEC>.  The host's dispatch table
// (core/plan.go) names them; VEC > 1 only when every tensor of x's shape has stride_c == 1,
// C % VEC == 0 and 16-byte alignment.
#define NANOSSM_COMMON_PARAMS(TYPE)                                                                 \
  const float *A, const TYPE *x, TYPE *out, const float *h0, float *hT, char *ws, const void *cu, \
      int64_t n_seqs, int64_t B, int64_t T, int64_t R, int64_t C, int64_t sAb, int64_t sAt,        \
      int64_t sAr, int64_t sxb, int64_t sxt, int64_t sxr, int64_t sxc, int64_t sob, int64_t sot,   \
      int64_t sor, int64_t soc, int64_t flags, int64_t n_chunks, int64_t n_tiles
#define NANOSSM_COMMON_INIT                                                                  \
  {A, x, out, h0, hT, ws, cu, n_seqs, B, T, R, C, {sAb, sAt, sAr}, {sxb, sxt, sxr, sxc}, \
   {sob, sot, sor, soc}, flags, n_chunks, n_tiles}

// Register budgets: the forward, plain or packed, keeps 3 blocks of 256 threads per SM (80
// registers, no spills: the packed walk runs in a rolled loop); the backward stages three
// tensors (3 x 32 KB per 4-warp block), so 2 blocks per SM fill shared memory and registers are free.
#define NANOSSM_FWD(NAME, TYPE, VEC, PACKED)                                                     \
  extern "C" __global__ void __launch_bounds__(WARP * MAX_WARPS, MIN_BLOCKS)                     \
      NAME(NANOSSM_COMMON_PARAMS(TYPE)) {                                                        \
    const Params<TYPE> p NANOSSM_COMMON_INIT;                                                    \
    scan_kernel<TYPE, VEC, false, PACKED>(p);                                                    \
  }

// The backward adds the forward's x and out, dA, dA's partial sums and K (tiles per row).
#define NANOSSM_BWD(NAME, TYPE, VEC, PACKED)                                                      \
  extern "C" __global__ void __launch_bounds__(WARP * BWD_MAX_WARPS, 2)                           \
      NAME(NANOSSM_COMMON_PARAMS(TYPE), const TYPE *xo, int64_t sxob, int64_t sxot, int64_t sxor, \
           int64_t sxoc, const TYPE *yo, int64_t syob, int64_t syot, int64_t syor, int64_t syoc,  \
           float *dA, int64_t sdAb, int64_t sdAt, int64_t sdAr, float *dA_part, int64_t K) {      \
    Params<TYPE> p NANOSSM_COMMON_INIT;                                                           \
    p.xo = xo, p.yo = yo, p.dA = dA, p.dA_part = dA_part, p.K = K;                                \
    p.sxo[0] = sxob, p.sxo[1] = sxot, p.sxo[2] = sxor, p.sxo[3] = sxoc;                           \
    p.syo[0] = syob, p.syo[1] = syot, p.syo[2] = syor, p.syo[3] = syoc;                           \
    p.sdA[0] = sdAb, p.sdA[1] = sdAt, p.sdA[2] = sdAr;                                            \
    scan_kernel<TYPE, VEC, true, PACKED>(p);                                                      \
  }

#define NANOSSM_ALL(KIND, MACRO, PACKED, SUFFIX)                              \
  MACRO(nanossm_scan_##KIND##SUFFIX##_f32_v4, float, 4, PACKED)               \
  MACRO(nanossm_scan_##KIND##SUFFIX##_f32_v1, float, 1, PACKED)               \
  MACRO(nanossm_scan_##KIND##SUFFIX##_f16_v8, __half, 8, PACKED)              \
  MACRO(nanossm_scan_##KIND##SUFFIX##_f16_v1, __half, 1, PACKED)              \
  MACRO(nanossm_scan_##KIND##SUFFIX##_bf16_v8, __nv_bfloat16, 8, PACKED)      \
  MACRO(nanossm_scan_##KIND##SUFFIX##_bf16_v1, __nv_bfloat16, 1, PACKED)

NANOSSM_ALL(fwd, NANOSSM_FWD, false, )
NANOSSM_ALL(fwd, NANOSSM_FWD, true, _packed)
NANOSSM_ALL(bwd, NANOSSM_BWD, false, )
NANOSSM_ALL(bwd, NANOSSM_BWD, true, _packed)

// Thread index and count of a launch of 32 x blockDim.y threads per block (core/cuda launches
// every kernel with 32-wide blocks).
__device__ __forceinline__ int64_t global_thread() {
  return (blockIdx.x * (int64_t)blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
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
