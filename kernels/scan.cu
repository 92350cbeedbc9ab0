// nanossm forward scan: one pass over x, O(T) work, parallel over T and over (b, r, c).
//
// Recurrence, per lane (b, r, c), with A the cumulative log-decay (A[-1] := 0):
//     h[t] = exp(A[t] - A[t-1]) * h[t-1] + x[t],    out[t] = h[t],    h[-1] = h0 (or 0)
// so  out[t] = exp(A[t]) * h0 + sum_{j<=t} exp(A[t] - A[j]) * x[j].
// Reverse runs the same recurrence in "scan order" tau = T-1-t with a(tau) = -A[T-1-tau]:
//     out[t] = sum_{j>=t} exp(A[j] - A[t]) * x[j].
// Every decay is the exp of a difference of A values (never exp(A[t]) * exp(-A[j])), and the
// difference is always taken "later minus earlier" in scan order, so it is <= 0 for decays <= 0.
//
// Decomposition
//   lane   = VEC consecutive channels of one (b, r): a 16-byte packet when the layout allows
//            (VEC = 4 for fp32, 8 for fp16/bf16; stride_c == 1, C % VEC == 0, aligned),
//            otherwise one channel (VEC = 1).
//   tile   = 32 lanes (one warp wide).  A block is 32 x S threads: S warps stacked along T.
//   chunk  = S * STEPS consecutive steps; warp w of a block owns steps [w*STEPS, (w+1)*STEPS).
// Each thread stages its STEPS packets in shared memory with asynchronous copies (all in flight
// at once, holding no registers, so a block keeps 64 KB of x in flight), folds them into a
// zero-carry aggregate, the block combines the S aggregates in shared memory, and when T needs
// more than one chunk, chunks pass carries through a deterministic decoupled look-back (single
// pass: x is read once and out written once; results are bit-identical run to run).  With the carry known, each thread replays its STEPS steps from
// shared memory and writes out.  Blocks are numbered chunk-major, so a block only waits on
// blocks dispatched before it: no deadlock.
//
// Packed variable-length sequences (cu_seqlens) reuse this scheme: a sequence start inside a
// chunk sets h[start-1] := h0[k] (or 0), which makes that chunk's aggregate an inclusive prefix
// for every later step, so look-back stops there.  The parameter slots exist; the host refuses
// cu_seqlens until that path ships.
//
// Every parameter is 64 bits wide: gorgonia.org/cu copies kernel arguments as 8-byte words.
// The parameter order is part of the contract with core/cuda/backend.go.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

// A named namespace, not an anonymous one: anonymous-namespace symbols carry a hash of the
// source path, which would make the committed module depend on where it was built.
namespace nanossm {

constexpr int WARP = 32;
constexpr int STEPS = 16;      // steps per thread, staged in shared memory (256 bytes in flight)
constexpr int MAX_WARPS = 8;   // warps per block along T (block <= 256 threads)
// Resident blocks per SM that the register budget must allow (ptxas caps registers to fit).
#ifndef NANOSSM_MIN_BLOCKS
#define NANOSSM_MIN_BLOCKS 3
#endif
constexpr int MIN_BLOCKS = NANOSSM_MIN_BLOCKS;


__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
// bfloat16 is the top half of a float: a shift (the header conversion costs registers)
__device__ __forceinline__ float to_f(__nv_bfloat16 v) {
  return __uint_as_float(static_cast<unsigned>(__bfloat16_as_ushort(v)) << 16);
}
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// VEC raw elements as loaded; kept raw in registers to halve their count for 16-bit types.
template <typename T, int VEC>
struct alignas(VEC * sizeof(T)) Packet {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ void load_packet(Packet<T, VEC>& p, const T* ptr, int64_t sc) {
  if constexpr (VEC * sizeof(T) == 16) {
    // read-only, streamed once: non-coherent 16-byte load
    *reinterpret_cast<uint4*>(&p) = __ldg(reinterpret_cast<const uint4*>(ptr));
  } else {
#pragma unroll
    for (int v = 0; v < VEC; ++v) p.v[v] = ptr[v * sc];
  }
}

// Stage one packet into shared memory: an asynchronous 16-byte copy (no register holds it while
// in flight) when the packet is 16 bytes, else a plain load and store.
template <typename T, int VEC>
__device__ __forceinline__ void stage_packet(Packet<T, VEC>* dst, const T* src, int64_t sc) {
  if constexpr (VEC * sizeof(T) == 16) {
    const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
  } else {
    Packet<T, VEC> p;
    load_packet<T, VEC>(p, src, sc);
    *dst = p;
  }
}

__device__ __forceinline__ void staged_wait() {
  asm volatile("cp.async.wait_all;" ::: "memory");
}

template <typename T, int VEC>
__device__ __forceinline__ void store_packet(T* ptr, int64_t sc, const float (&h)[VEC]) {
  Packet<T, VEC> p;
  if constexpr (std::is_same_v<T, __nv_bfloat16> && VEC % 2 == 0) {  // paired conversions
#pragma unroll
    for (int v = 0; v < VEC; v += 2) *reinterpret_cast<__nv_bfloat162*>(&p.v[v]) = __floats2bfloat162_rn(h[v], h[v + 1]);
  } else if constexpr (std::is_same_v<T, __half> && VEC % 2 == 0) {
#pragma unroll
    for (int v = 0; v < VEC; v += 2) *reinterpret_cast<__half2*>(&p.v[v]) = __floats2half2_rn(h[v], h[v + 1]);
  } else {
#pragma unroll
    for (int v = 0; v < VEC; ++v) p.v[v] = from_f<T>(h[v]);
  }
  if constexpr (VEC * sizeof(T) == 16) {
    *reinterpret_cast<uint4*>(ptr) = *reinterpret_cast<const uint4*>(&p);
  } else {
#pragma unroll
    for (int v = 0; v < VEC; ++v) ptr[v * sc] = p.v[v];
  }
}

// The look-back's "not yet written" pattern (a NaN no arithmetic produces) and its accessors.
constexpr unsigned UNWRITTEN = 0xffffffffu;

template <int VEC>
__device__ __forceinline__ void publish(float* dst, const float (&v)[VEC]) {
#pragma unroll
  for (int i = 0; i < VEC; i += 4) {
    if constexpr (VEC % 4 == 0) {
      __stcg(reinterpret_cast<float4*>(dst + i), make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]));
    } else {
      for (int k = i; k < VEC && k < i + 4; ++k) __stcg(dst + k, v[k]);
    }
  }
}

// Read VEC words from L2 (not L1: another SM wrote them); true when all are written.
template <int VEC>
__device__ __forceinline__ bool poll(const float* src, float (&v)[VEC]) {
  bool ok = true;
#pragma unroll
  for (int i = 0; i < VEC; i += 4) {
    if constexpr (VEC % 4 == 0) {
      const float4 q = __ldcv(reinterpret_cast<const float4*>(src + i));
      v[i] = q.x, v[i + 1] = q.y, v[i + 2] = q.z, v[i + 3] = q.w;
    } else {
      for (int k = i; k < VEC && k < i + 4; ++k) v[k] = __ldcv(src + k);
    }
  }
#pragma unroll
  for (int i = 0; i < VEC; ++i) ok &= __float_as_uint(v[i]) != UNWRITTEN;
  return ok;
}

// Workspace layout (bytes), mirrored by core/plan.go: aggregates, then inclusive prefixes, each
// n * 32 * VEC floats (256-byte aligned), n = n_chunks * n_tiles; all set to UNWRITTEN (memset
// 0xff) before every launch.
__host__ __device__ constexpr int64_t align256(int64_t v) { return (v + 255) / 256 * 256; }

template <typename T, int VEC>
__device__ __forceinline__ void scan_fwd(
    const float* __restrict__ A, const T* __restrict__ x, T* __restrict__ out,
    const float* __restrict__ h0, float* __restrict__ hT, char* __restrict__ ws,
    int64_t B, int64_t T_, int64_t R, int64_t C, int64_t sAb, int64_t sAt, int64_t sAr,
    int64_t sxb, int64_t sxt, int64_t sxr, int64_t sxc, int64_t sob, int64_t sot, int64_t sor,
    int64_t soc, int64_t flags, int64_t n_chunks, int64_t n_tiles) {
  __shared__ float sh_agg[MAX_WARPS][WARP][VEC];
  __shared__ float sh_aend[MAX_WARPS][WARP];

  const int lane = threadIdx.x, w = threadIdx.y, S = blockDim.y;
  const bool reverse = flags & 1;

  // (tile, chunk) in chunk-major order: chunk j of every tile has a lower block index than chunk
  // j + 1, and blocks are dispatched in index order, so a block only waits on running blocks.
  const int64_t tile = blockIdx.x % n_tiles, chunk = blockIdx.x / n_tiles;

  const int64_t CV = C / VEC;
  const int64_t g = tile * WARP + lane;
  const bool active = g < B * R * CV;
  int64_t cv = 0, r = 0, b = 0;
  if (active) {
    cv = g % CV;
    r = (g / CV) % R;
    b = g / CV / R;
  }
  const float* Ab = A + b * sAb + r * sAr;
  const T* xb = x + b * sxb + r * sxr + cv * VEC * sxc;
  T* ob = out + b * sob + r * sor + cv * VEC * soc;
  const int64_t state_off = (b * R + r) * C + cv * VEC;  // h0 / hT are contiguous (B, R, C)

  // a(tau): A in scan order, negated for reverse, so every decay is exp(a(later) - a(earlier)).
  auto a_at = [&](int64_t tau) -> float {
    const float v = Ab[(reverse ? T_ - 1 - tau : tau) * sAt];
    return reverse ? -v : v;
  };
  // a just before step tau.  Before step 0 it is A[-1] := 0 when an initial state decays in;
  // with no initial state the carry is exactly 0, and a(0) keeps every exponent <= 0 (no 0*inf).
  auto a_before = [&](int64_t tau) -> float {
    if (!active) return 0.f;
    if (tau > 0) return a_at(tau - 1);
    return h0 ? 0.f : a_at(0);
  };

  // ---- phase 1: stage this thread's STEPS packets in shared memory (every copy in flight at
  // once, none held in registers), read its STEPS A values, fold a zero-carry aggregate.
  // Shared layout: row (w*STEPS + i), lane -> xs[i * WARP]; a warp's row is 32 adjacent packets.
  extern __shared__ __align__(16) unsigned char smem[];
  Packet<T, VEC>* xs = reinterpret_cast<Packet<T, VEC>*>(smem) + (int64_t)w * STEPS * WARP + lane;
  const int64_t chunk_len = (int64_t)S * STEPS;
  const int64_t t0 = chunk * chunk_len;        // first step of the block (scan order)
  const int64_t ts = t0 + (int64_t)w * STEPS;  // first step of this thread
  float dec[STEPS];
  const float a_prev = ts < T_ ? a_before(ts) : 0.f;
  float a_last = a_prev;
#pragma unroll
  for (int i = 0; i < STEPS; ++i) {
    const int64_t tau = ts + i;
    if (active && tau < T_) {
      const int64_t t = reverse ? T_ - 1 - tau : tau;
      stage_packet<T, VEC>(&xs[i * WARP], xb + t * sxt, sxc);
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
  {
    float ap = a_prev;
#pragma unroll
    for (int i = 0; i < STEPS; ++i) {
      const float ai = dec[i];
      dec[i] = expf(ai - ap);
      ap = ai;
      const Packet<T, VEC> p = xs[i * WARP];
#pragma unroll
      for (int v = 0; v < VEC; ++v) h[v] = fmaf(dec[i], h[v], to_f(p.v[v]));
    }
  }
#pragma unroll
  for (int v = 0; v < VEC; ++v) sh_agg[w][lane][v] = h[v];
  sh_aend[w][lane] = a_last;
  __syncthreads();

  // ---- phase 2: the carry into the block (state at step t0 - 1): h0 for chunk 0, else a look-back
  // that every warp does for itself (no second barrier). Publication needs no flag or fence: the
  // workspace starts as the NaN pattern 0xffffffff, which arithmetic never produces (GPU NaNs are
  // canonical 0x7fffffff), and every 32-bit value is written once; a reader polls its own lane's
  // values until none is the pattern, and each word it sees is final.
  const float a_blk = t0 < T_ ? a_before(t0) : 0.f;
  float carry[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) carry[v] = (chunk == 0 && h0 && active) ? h0[state_off + v] : 0.f;
  if (n_chunks > 1) {
    const int64_t n = n_chunks * n_tiles;
    float* aggs = reinterpret_cast<float*>(ws);
    float* incl = aggs + align256(n * WARP * VEC * 4) / 4;
    const bool last = chunk == n_chunks - 1;
    const int64_t me = chunk * n_tiles + tile;
    float agg[VEC], a_end = a_blk;
#pragma unroll
    for (int v = 0; v < VEC; ++v) agg[v] = 0.f;
    if (w == S - 1 && !last) {
      // block aggregate over the S sub-chunks (all full: not the last chunk); publish it first,
      // so successors can look past this block while it looks back
      for (int s = 0; s < S; ++s) {
        const float d = expf(sh_aend[s][lane] - a_end);
        a_end = sh_aend[s][lane];
#pragma unroll
        for (int v = 0; v < VEC; ++v) agg[v] = fmaf(d, agg[v], sh_agg[s][lane][v]);
      }
      if (chunk > 0) publish<VEC>(&aggs[(me * WARP + lane) * VEC], agg);
    }
    if (chunk > 0 && active) {
      // Find the nearest earlier chunk j whose inclusive prefix P(j) is out, looking past chunks
      // whose aggregate is out; then replay P(j+1) .. P(chunk-1) with the very recurrence each
      // chunk uses for its own prefix, P(i) = exp(a_end(i) - a_end(i-1)) * P(i-1) + agg(i). The
      // carry is then bit-identical whichever path the timing allowed: results are reproducible.
      int64_t j = chunk - 1;
      float val[VEC];
      for (int spins = 0;;) {
        const int64_t id = (j * n_tiles + tile) * WARP + lane;
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
      float a_prev_end = a_at((j + 1) * chunk_len - 1);
      for (int64_t i = j + 1; i < chunk; ++i) {
        const int64_t id = (i * n_tiles + tile) * WARP + lane;
        poll<VEC>(&aggs[id * VEC], val);  // seen written above: final
        const float a_e = i == chunk - 1 ? a_blk : a_at((i + 1) * chunk_len - 1);
        const float d = expf(a_e - a_prev_end);
        a_prev_end = a_e;
#pragma unroll
        for (int v = 0; v < VEC; ++v) carry[v] = fmaf(d, carry[v], val[v]);
      }
    }
    if (w == S - 1 && !last) {
      const float d = expf(a_end - a_blk);
      float inc[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) inc[v] = fmaf(d, carry[v], agg[v]);
      publish<VEC>(&incl[(me * WARP + lane) * VEC], inc);
    }
  }

  // ---- phase 3: fold the sub-chunks before this warp, replay the steps with the true carry
  if (!active || ts >= T_) return;
  {
    float ap = a_blk;
    for (int s = 0; s < w; ++s) {
      const float d = expf(sh_aend[s][lane] - ap);
      ap = sh_aend[s][lane];
#pragma unroll
      for (int v = 0; v < VEC; ++v) carry[v] = fmaf(d, carry[v], sh_agg[s][lane][v]);
    }
  }
#pragma unroll
  for (int i = 0; i < STEPS; ++i) {
    const int64_t tau = ts + i;
    const Packet<T, VEC> p = xs[i * WARP];
#pragma unroll
    for (int v = 0; v < VEC; ++v) carry[v] = fmaf(dec[i], carry[v], to_f(p.v[v]));
    if (tau < T_) {
      const int64_t t = reverse ? T_ - 1 - tau : tau;
      store_packet<T, VEC>(ob + t * sot, soc, carry);
      if (hT && tau == T_ - 1) {
#pragma unroll
        for (int v = 0; v < VEC; ++v) hT[state_off + v] = carry[v];
      }
    }
  }
}

}  // namespace nanossm

using nanossm::scan_fwd;
using nanossm::WARP;
using nanossm::MAX_WARPS;
using nanossm::MIN_BLOCKS;

// Entry points: nanossm_scan_fwd_<dtype>_v<VEC>.  The host's dispatch table (core/cuda) names
// them; VEC > 1 only when x and out have stride_c == 1, C % VEC == 0 and 16-byte alignment.
#define NANOSSM_FWD(NAME, TYPE, VEC)                                                             \
  extern "C" __global__ void __launch_bounds__(WARP * MAX_WARPS, MIN_BLOCKS) NAME(                           \
      const float* A, const TYPE* x, TYPE* out, const float* h0, float* hT, char* ws,            \
      const int64_t* cu_seqlens, int64_t n_seqs, int64_t B, int64_t T, int64_t R, int64_t C,     \
      int64_t sAb, int64_t sAt, int64_t sAr, int64_t sxb, int64_t sxt, int64_t sxr, int64_t sxc, \
      int64_t sob, int64_t sot, int64_t sor, int64_t soc, int64_t flags, int64_t n_chunks,       \
      int64_t n_tiles) {                                                                         \
    (void)cu_seqlens;                                                                            \
    (void)n_seqs;                                                                                \
    scan_fwd<TYPE, VEC>(A, x, out, h0, hT, ws, B, T, R, C, sAb, sAt, sAr, sxb, sxt, sxr, sxc,    \
                        sob, sot, sor, soc, flags, n_chunks, n_tiles);                           \
  }

NANOSSM_FWD(nanossm_scan_fwd_f32_v4, float, 4)
NANOSSM_FWD(nanossm_scan_fwd_f32_v1, float, 1)
NANOSSM_FWD(nanossm_scan_fwd_f16_v8, __half, 8)
NANOSSM_FWD(nanossm_scan_fwd_f16_v1, __half, 1)
NANOSSM_FWD(nanossm_scan_fwd_bf16_v8, __nv_bfloat16, 8)
NANOSSM_FWD(nanossm_scan_fwd_bf16_v1, __nv_bfloat16, 1)
