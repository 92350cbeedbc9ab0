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
constexpr int STEPS = 16;      // steps per thread, staged in shared memory (256 bytes in flight)
constexpr int MAX_WARPS = 8;   // warps per block along T (block <= 256 threads)
constexpr int BWD_MAX_WARPS = 4;  // backward: 3 staged tensors x 4 warps = 96 KB per block
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

// Read VEC words already seen written (final): plain L2 loads the compiler may batch.
template <int VEC>
__device__ __forceinline__ void load_cg(const float* src, float (&v)[VEC]) {
#pragma unroll
  for (int i = 0; i < VEC; i += 4) {
    if constexpr (VEC % 4 == 0) {
      const float4 q = __ldcg(reinterpret_cast<const float4*>(src + i));
      v[i] = q.x, v[i + 1] = q.y, v[i + 2] = q.z, v[i + 3] = q.w;
    } else {
      for (int k = i; k < VEC && k < i + 4; ++k) v[k] = __ldcg(src + k);
    }
  }
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

// Sum of v over the `width` consecutive lanes starting at a lane with lane_in_seg == 0, in a
// fixed order (deterministic); the sum lands on that first lane. Every lane of the warp calls it.
__device__ __forceinline__ float segment_sum(float v, int lane_in_seg, int width) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float u = __shfl_down_sync(0xffffffffu, v, o);
    if (lane_in_seg + o < width) v += u;
  }
  return v;
}

}  // namespace nanossm
