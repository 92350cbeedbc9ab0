// Device helpers shared by the scan kernels (kernels/scan.cu): element conversions, 16-byte
// packets, asynchronous staging, and the look-back's publish/poll protocol.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

// A named namespace, not an anonymous one: anonymous-namespace symbols carry a hash of the
// source path, which would make the committed module depend on where it was built.
namespace nanossm {

constexpr int WARP = 32;
// Steps per thread of the forward, staged in shared memory (256 bytes in flight per thread).
#ifndef NANOSSM_FWD_STEPS
#define NANOSSM_FWD_STEPS 16
#endif
constexpr int STEPS = NANOSSM_FWD_STEPS;
constexpr int MAX_WARPS = 8;   // warps per block along T (block <= 256 threads)
// The backward stages three tensors: BWD_STEPS steps per thread and BWD_MAX_WARPS warps give
// 96 KB per block (two per SM). 8 steps x 8 warps keeps 16 warps per SM busy; 16 x 4 (v8) had 8.
#ifndef NANOSSM_BWD_STEPS
#define NANOSSM_BWD_STEPS 8
#endif
constexpr int BWD_STEPS = NANOSSM_BWD_STEPS;
// (NANOSSM_BWD_MAX_WARPS: a build knob for longer backward chunks, e.g. 16 steps x 8 warps,
// 192 KB a block, one a SM; the library's NANOSSM_TUNE_BWD_MAX_WARPS must match)
#ifndef NANOSSM_BWD_MAX_WARPS
#define NANOSSM_BWD_MAX_WARPS (64 / BWD_STEPS)
#endif
constexpr int BWD_MAX_WARPS = NANOSSM_BWD_MAX_WARPS;
// Steps per thread of the long-chunk kernels (kernels/scan.cu; core/plan.go longSteps): the
// 16-bit grouped forward over 8-byte packets, the 16-bit forward over 16-byte packets (V8: 22,
// so that two blocks of 88 KB and their static arrays fit an SM's 228 KB; 24 did not, by 256
// bytes) and the fp32 late backward.
constexpr int LONG_STEPS = 32, V8_LONG_STEPS = 22, BWD_LONG_STEPS = 16;
// Resident blocks per SM that the register budget must allow (ptxas caps registers to fit).
#ifndef NANOSSM_MIN_BLOCKS
#define NANOSSM_MIN_BLOCKS 3
#endif
constexpr int MIN_BLOCKS = NANOSSM_MIN_BLOCKS;
// The forward over 16-bit packets (8 channels per lane) needs more registers than the 80 that
// 3 blocks per SM leave (it spilled 84 bytes, reloaded in the replay loop): it takes 2 blocks
// per SM and 128 registers. Measured on the H200 (bf16 x,64,64, ratio to the copy, 3 -> 2 blocks,
// same run): 4,8192 1.50 -> 1.34, 1,65536 2.05 -> 1.69, 2,1024 2.11 -> 1.89, 8,2048 1.44 -> 1.47,
// 16,1024,16,128 1.55 -> 1.53.
#ifndef NANOSSM_FWD16_MIN_BLOCKS
#define NANOSSM_FWD16_MIN_BLOCKS 2
#endif
constexpr int fwd_min_blocks(int elem_bytes, int vec) {
  return elem_bytes == 2 && vec == 8 ? NANOSSM_FWD16_MIN_BLOCKS : MIN_BLOCKS;
}


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

// A packet's values as floats. 16-bit pairs widen a 32-bit word at a time: for bfloat16 a shift
// (low half) and a mask (high half), one instruction each, where the per-element conversion cost
// three for a high half (extract, move, shift; v17: 8 of the bf16 forward's ~53 per step).
template <typename T, int VEC>
__device__ __forceinline__ void unpack(const Packet<T, VEC>& p, float (&f)[VEC]) {
  if constexpr (sizeof(T) == 2 && VEC % 2 == 0) {
#pragma unroll
    for (int i = 0; i < VEC / 2; ++i) {
      const unsigned w = reinterpret_cast<const unsigned*>(p.v)[i];
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        f[2 * i] = __uint_as_float(w << 16), f[2 * i + 1] = __uint_as_float(w & 0xffff0000u);
      } else {
        const float2 q = __half22float2(*reinterpret_cast<const __half2*>(&w));
        f[2 * i] = q.x, f[2 * i + 1] = q.y;
      }
    }
  } else {
#pragma unroll
    for (int v = 0; v < VEC; ++v) f[v] = to_f(p.v[v]);
  }
}

// Staging one packet into shared memory, in two halves, so that a thread issues every load of
// its steps before it consumes any: GPUs issue in order, so a consumer placed between two loads
// (a shared-memory store of a loaded register, or a branch's join that needs the value) makes
// every later load wait a full memory round trip. (v12: the forward had one such consumer per
// step, 16 round trips in series per thread, 52% of its stall samples.)
//   stage_issue: a 16-byte packet goes to shared memory by an asynchronous copy, a narrower one
//   into `held` by plain loads; zeros when !ok, and then src is not read (it may point anywhere).
//   stage_land: a narrower packet is stored from `held` once every load is out.
// (8-byte packets, 16-bit lanes of 4 channels, go through L1: cp.async.cg takes 16 bytes only)
template <typename T, int VEC>
constexpr bool kAsyncStage = VEC * sizeof(T) == 16 || VEC * sizeof(T) == 8;

// A read-only load that happens only when ok (else 0, and src is never touched: it may point
// past the tensor). Predicated, not a branch: nothing consumes the value at a join.
__device__ __forceinline__ float ldg_if(const float* src, bool ok) {
  float v = 0.f;
  asm volatile("{ .reg .pred p; setp.ne.u32 p, %2, 0; @p ld.global.nc.f32 %0, [%1]; }" : "+f"(v) : "l"(src), "r"(unsigned(ok)));
  return v;
}
// Bring src's line into L1 now, holding no register, when ok. ptxas places a thread's A loads
// behind cp.async.wait_all (under the register cap it will not keep 16 loads in flight across
// it); prefetched with the copies, those loads then hit L1 instead of paying a second round trip.
__device__ __forceinline__ void prefetch_if(const void* src, bool ok) {
  asm volatile("{ .reg .pred p; setp.ne.u32 p, %1, 0; @p prefetch.global.L1 [%0]; }" ::"l"(src), "r"(unsigned(ok)));
}
template <typename T>  // 16-bit elements
__device__ __forceinline__ T ldg_if(const T* src, bool ok) {
  unsigned short v = 0;
  asm volatile("{ .reg .pred p; setp.ne.u32 p, %2, 0; @p ld.global.nc.b16 %0, [%1]; }" : "+h"(v) : "l"(src), "r"(unsigned(ok)));
  return *reinterpret_cast<const T*>(&v);
}

template <typename T, int VEC>
__device__ __forceinline__ void stage_issue(Packet<T, VEC>* dst, Packet<T, VEC>& held, const T* src, int64_t sc,
                                            bool ok) {
  if constexpr (kAsyncStage<T, VEC>) {
    // ignore-src = !ok: zeros land and src is not read (it may point past the tensor)
    const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    if constexpr (sizeof(Packet<T, VEC>) == 16) {
      asm volatile("{ .reg .pred p; setp.eq.u32 p, %2, 0; cp.async.cg.shared.global [%0], [%1], 16, p; }" ::"r"(d),
                   "l"(src), "r"(unsigned(ok))
                   : "memory");
    } else {
      asm volatile("{ .reg .pred p; setp.eq.u32 p, %2, 0; cp.async.ca.shared.global [%0], [%1], 8, p; }" ::"r"(d),
                   "l"(src), "r"(unsigned(ok))
                   : "memory");
    }
  } else {
#pragma unroll
    for (int v = 0; v < VEC; ++v) held.v[v] = ldg_if(src + v * sc, ok);
  }
}

template <typename T, int VEC>
__device__ __forceinline__ void stage_land(Packet<T, VEC>* dst, const Packet<T, VEC>& held) {
  if constexpr (!kAsyncStage<T, VEC>) *dst = held;  // (zeros where !ok: ldg_if)
}

__device__ __forceinline__ void staged_wait() {
  asm volatile("cp.async.wait_all;" ::: "memory");
}
// The backward over asynchronous copies stages in two groups (issue_steps, v40): g's, then x's
// and out's (empty in a LATE block that looks back: its x and out follow the carry, a third).
// Close a group; wait for all but the last.
template <bool BWD, typename T, int VEC>
constexpr bool kTwoGroups = BWD && kAsyncStage<T, VEC>;
__device__ __forceinline__ void staged_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
__device__ __forceinline__ void staged_wait_g() {
  asm volatile("cp.async.wait_group 1;" ::: "memory");
}

// Output stores: a 16-byte packet goes out as one vector store (a plain store of a type-punned
// packet was split by the compiler into four 4-byte stores); with NANOSSM_STORE_STREAMING it is
// evict-first in L2 (st.global.cs).
__device__ __forceinline__ void store16(void* ptr, uint4 u) {
#ifdef NANOSSM_STORE_STREAMING
  asm("st.global.cs.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(ptr), "r"(u.x), "r"(u.y), "r"(u.z), "r"(u.w) : "memory");
#else
  asm("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(ptr), "r"(u.x), "r"(u.y), "r"(u.z), "r"(u.w) : "memory");
#endif
}
__device__ __forceinline__ void store8(void* ptr, unsigned a, unsigned b) {
#ifdef NANOSSM_STORE_STREAMING
  asm("st.global.cs.v2.b32 [%0], {%1, %2};" ::"l"(ptr), "r"(a), "r"(b) : "memory");
#else
  asm("st.global.v2.b32 [%0], {%1, %2};" ::"l"(ptr), "r"(a), "r"(b) : "memory");
#endif
}
__device__ __forceinline__ unsigned pack2(float a, float b, __half) {
  const __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<const unsigned*>(&h);
}
__device__ __forceinline__ unsigned pack2(float a, float b, __nv_bfloat16) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const unsigned*>(&h);
}

template <typename T, int VEC>
__device__ __forceinline__ void store_packet(T* ptr, int64_t sc, const float (&h)[VEC]) {
  if constexpr (std::is_same_v<T, float> && VEC == 4) {
    store16(ptr, make_uint4(__float_as_uint(h[0]), __float_as_uint(h[1]), __float_as_uint(h[2]), __float_as_uint(h[3])));
  } else if constexpr (VEC == 8) {  // 16-bit pairs
    store16(ptr, make_uint4(pack2(h[0], h[1], T()), pack2(h[2], h[3], T()), pack2(h[4], h[5], T()),
                            pack2(h[6], h[7], T())));
  } else if constexpr (VEC == 4 && sizeof(T) == 2) {
    store8(ptr, pack2(h[0], h[1], T()), pack2(h[2], h[3], T()));
  } else {
#pragma unroll
    for (int v = 0; v < VEC; ++v) ptr[v * sc] = from_f<T>(h[v]);
  }
}

// v, made opaque to the compiler: a pointer computed once stays in registers instead of being
// recomputed from its 64-bit index terms at every use (what ptxas does under a tight register cap).
template <typename P>
__device__ __forceinline__ P* opaque(P* v) {
  asm volatile("" : "+l"(v));
  return v;
}

// Programmatic dependent launch (sm_90+; no-ops before, and in a kernel launched without it):
// allow_dependents lets the next kernel of the stream begin launching while this one runs;
// grid_dependency_wait blocks until the kernel before this one has completed and its writes are
// visible. core/cuda launches a scan that way right after the workspace reset (nanossm_ws_reset),
// so the scan stages its x while the reset runs and waits only before its first look-back access.
__device__ __forceinline__ void allow_dependents() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dependency_wait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// The look-back's "not yet written" pattern (a NaN no arithmetic produces) and its accessors.
constexpr unsigned UNWRITTEN = 0xffffffffu;

template <int VEC>
__device__ __forceinline__ void publish(float* dst, const float (&v)[VEC]) {
#pragma unroll
  for (int i = 0; i < VEC; i += 4) {
    if constexpr (VEC % 4 == 0) {
      asm volatile("st.relaxed.gpu.global.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(dst + i), "f"(v[i]),
                   "f"(v[i + 1]), "f"(v[i + 2]), "f"(v[i + 3])
                   : "memory");
    } else {
      for (int k = i; k < VEC && k < i + 4; ++k) {
        asm volatile("st.relaxed.gpu.global.f32 [%0], %1;" ::"l"(dst + k), "f"(v[k]) : "memory");
      }
    }
  }
}

// Read VEC words at src with one loader (16-byte loads where VEC allows).
template <int VEC, typename Load>
__device__ __forceinline__ void load_words(const float* src, float (&v)[VEC], Load load) {
#pragma unroll
  for (int i = 0; i < VEC; i += 4) {
    if constexpr (VEC % 4 == 0) {
      const float4 q = load(reinterpret_cast<const float4*>(src + i));
      v[i] = q.x, v[i + 1] = q.y, v[i + 2] = q.z, v[i + 3] = q.w;
    } else {
      for (int k = i; k < VEC && k < i + 4; ++k) v[k] = load(src + k);
    }
  }
}

// A poll's load: relaxed at GPU scope (v59; __ldcv's volatile load is a system-scope one, whose
// coherence reaches beyond the GPU for nothing here: every writer is a block of the same grid,
// on the same device). The publications (publish) are relaxed GPU-scope stores: volatile, with a
// memory clobber as __stcg's, so the aggregate's store stays before the look-back that follows it
// (successors look past it meanwhile); the same machine code as without them.
__device__ __forceinline__ float4 ld_poll(const float4* p) {
  float4 v;
  asm volatile("ld.relaxed.gpu.global.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ float ld_poll(const float* p) {
  float v;
  asm volatile("ld.relaxed.gpu.global.f32 %0, [%1];" : "=f"(v) : "l"(p));
  return v;
}

// Read VEC words from L2 (not L1: another SM wrote them); true when all are written.
template <int VEC>
__device__ __forceinline__ bool poll(const float* src, float (&v)[VEC]) {
  load_words<VEC>(src, v, [](auto p) { return ld_poll(p); });
  bool ok = true;
#pragma unroll
  for (int i = 0; i < VEC; ++i) ok &= __float_as_uint(v[i]) != UNWRITTEN;
  return ok;
}

// Poll BATCH aggregates of VEC words at once (at(q): the q-th's words): every load issued before
// any is checked, then true when all are written. (poll() after poll(), each checked as it came,
// let ptxas hold each load's issue for the check before it: the first try of a batch of 8 went
// out as 3 + 2 + 2 + 1 loads, four round trips, and a block of the one-tile fp32 backward waited
// 4.2 us for its group's aggregates, session 27's trace. With this: 3.6 us, the fp32 one-tile
// backward 2.92 -> 2.81 of the copy; what is left is the round trips themselves, ~1 us each
// under the stream's load, and a retry when the newest aggregate is not yet visible.)
template <int BATCH, int VEC, typename At>
__device__ __forceinline__ bool poll_batch(const At& at, float (&vals)[BATCH][VEC]) {
#pragma unroll
  for (int q = 0; q < BATCH; ++q) load_words<VEC>(at(q), vals[q], [](auto p) { return ld_poll(p); });
  bool ok = true;
#pragma unroll
  for (int q = 0; q < BATCH; ++q) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) ok &= __float_as_uint(vals[q][v]) != UNWRITTEN;
  }
  return ok;
}

// Read VEC words already seen written (final): plain L2 loads the compiler may batch.
template <int VEC>
__device__ __forceinline__ void load_cg(const float* src, float (&v)[VEC]) {
  load_words<VEC>(src, v, [](auto p) { return __ldcg(p); });
}

// Workspace layout (bytes), mirrored by core/plan.go: aggregates, then inclusive prefixes, each
// n * 32 * VEC floats (256-byte aligned), n = n_chunks * n_tiles; all set to UNWRITTEN (memset
// 0xff) before every launch.
__host__ __device__ constexpr int64_t align256(int64_t v) { return (v + 255) / 256 * 256; }

// Smallest i in [0, n] with bound(i) >= key, for a non-decreasing bound() with bound(n) >= key,
// found by the whole warp together (every lane must call it with the same arguments): each round
// probes 32 positions at once, so 100k packed sequences take 4 rounds of loads, not 17.
template <typename Bound>
__device__ __forceinline__ int64_t warp_lower_bound(const Bound& bound, int64_t n, int64_t key) {
  const int lane = threadIdx.x;
  int64_t lo = 0, hi = n;  // the answer lies in [lo, hi]
  while (lo < hi) {
    const int64_t step = (hi - lo + 30) / 31;  // lane 31 probes hi itself
    const int64_t p = min(lo + lane * step, hi);
    const unsigned ok = __ballot_sync(0xffffffffu, p == hi || bound(p) >= key);
    const int f = __ffs(ok) - 1;  // first lane whose probe is >= key
    if (f == 0) {
      hi = lo;
    } else {
      hi = min(lo + f * step, hi);
      lo = lo + (f - 1) * step + 1;
    }
  }
  return lo;
}

// q = a / b and m = a % b for a >= 0, b > 0: a 32-bit division when both fit (a 64-bit
// division is a ~70-instruction routine, 32-bit ~20), as they do for every index of a launch
// this library plans unless a dimension passes 2^32.
__device__ __forceinline__ void divmod(int64_t a, int64_t b, int64_t& q, int64_t& m) {
  if (((a | b) >> 32) == 0) {
    const unsigned qa = static_cast<unsigned>(a) / static_cast<unsigned>(b);
    q = qa, m = static_cast<unsigned>(a) - qa * static_cast<unsigned>(b);
  } else {
    q = a / b, m = a - q * b;
  }
}

// The (b, r) row and packet index cv of lane `lane` of tile `tile` (row == rows: no row).
// Forward: lanes are consecutive (b, r, cv). Backward: a tile holds whole rows of CV = C / VEC
// lanes (32 / CV of them) or, when CV > 32, K = ceil(CV / 32) tiles share one row.
struct LaneMap {
  int64_t row, cv;
};
__device__ __forceinline__ LaneMap map_lane(bool bwd, int64_t tile, int lane, int64_t CV, int64_t rows,
                                            int64_t K) {
  LaneMap m;
  if (!bwd) {
    divmod(tile * WARP + lane, CV, m.row, m.cv);
  } else if (CV <= WARP) {
    const int64_t per = WARP / CV;
    int64_t q, c;
    divmod(lane, CV, q, c);
    m.row = q < per ? tile * per + q : rows, m.cv = c;  // lanes no whole row fits in: none
  } else {
    int64_t k;
    divmod(tile, K, m.row, k);
    m.cv = k * WARP + lane;
    if (m.cv >= CV) m.row = rows;
  }
  if (m.row > rows) m.row = rows;
  return m;
}

}  // namespace nanossm
