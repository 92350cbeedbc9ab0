/*
 * nanossm.h: the C ABI of libnanossm.so (hand-written; the one public header).
 *
 * The op, for A (B,T,R) float32 (cumulative log-decay) and x (B,T,R,C):
 *     out[b,t,r,c] = sum_{j<=t} exp(A[b,t,r] - A[b,j,r]) * x[b,j,r,c]
 * i.e. h[t] = exp(A[t] - A[t-1]) * h[t-1] + x[t], out[t] = h[t].  See SPEC.md for initial state,
 * reverse and the exact numerics.
 *
 * Conventions
 *   - Tensors are described by nanossm_tensor: pointer, dtype, sizes and strides in ELEMENTS.
 *   - device >= 0: pointers are CUDA device pointers on that device, the work is enqueued on
 *     `stream` (a CUstream / cudaStream_t; NULL = legacy default stream) in the device's primary
 *     context, and the call returns without synchronising.  device == NANOSSM_CPU (-1): host
 *     pointers, computed before the call returns.  The stream is always the last parameter.
 *   - Every function returns a nanossm_status; on failure nanossm_last_error() tells what was
 *     wrong, naming the argument.  The library never aborts the process on bad input.
 *   - Thread-safe: any thread may call, concurrently, on any streams.
 *   - The library embeds a Go runtime: do not fork() after the first call and use the library in
 *     the child (load it lazily, after forking).  Load one flavour per process: libnanossm.so
 *     (CUDA + CPU; needs libcuda.so.1 and a working cuInit at load, else the process exits) or
 *     libnanossm_cpu.so (CPU only; loads anywhere).
 */
#ifndef NANOSSM_H
#define NANOSSM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NANOSSM_VERSION_MAJOR 0
#define NANOSSM_VERSION_MINOR 2
#define NANOSSM_VERSION_PATCH 0
/* major * 10000 + minor * 100 + patch; compare with nanossm_version() at run time. */
#define NANOSSM_VERSION \
  (NANOSSM_VERSION_MAJOR * 10000 + NANOSSM_VERSION_MINOR * 100 + NANOSSM_VERSION_PATCH)

/* Stable status codes: values never change meaning. */
typedef enum nanossm_status {
  NANOSSM_OK = 0,
  NANOSSM_ERR_INVALID_ARGUMENT = 1, /* a shape, dtype, stride, pointer or option is wrong */
  NANOSSM_ERR_UNSUPPORTED = 2,      /* valid, but this build or device cannot do it */
  NANOSSM_ERR_CUDA = 3,             /* the CUDA driver failed; the message has the error name */
  NANOSSM_ERR_NO_CUDA = 4,          /* device call in the CPU-only flavour or without CUDA */
  NANOSSM_ERR_INTERNAL = 5          /* a bug in nanossm (e.g. a recovered panic); please report */
} nanossm_status;

/* Element types: values never change meaning. */
typedef enum nanossm_dtype {
  NANOSSM_FLOAT32 = 0,
  NANOSSM_FLOAT16 = 1,
  NANOSSM_BFLOAT16 = 2,
  NANOSSM_FLOAT64 = 3, /* CPU only */
  NANOSSM_INT32 = 4,   /* cu_seqlens */
  NANOSSM_INT64 = 5    /* cu_seqlens */
} nanossm_dtype;

#define NANOSSM_CPU (-1)
#define NANOSSM_MAX_DIMS 4

/* A tensor the caller owns. data == NULL marks an absent optional tensor. */
typedef struct nanossm_tensor {
  void* data;
  int32_t dtype; /* nanossm_dtype */
  int32_t ndim;  /* 1..NANOSSM_MAX_DIMS */
  int64_t shape[NANOSSM_MAX_DIMS];
  int64_t strides[NANOSSM_MAX_DIMS]; /* in elements, >= 0 */
} nanossm_tensor;

/* Scan options. Zero-initialise, then set what you need; struct_size = sizeof(nanossm_scan_options)
 * lets later versions add fields without breaking callers built against this header: the library
 * also takes the struct of an earlier version (0.1: without max_seqlen, which then reads 0). */
#define NANOSSM_SCAN_REVERSE 1u /* out[t] = sum_{j>=t} exp(A[j] - A[t]) * x[j] */

typedef struct nanossm_scan_options {
  uint32_t struct_size;
  uint32_t flags;               /* NANOSSM_SCAN_* */
  nanossm_tensor initial_state; /* optional (B,R,C) float32 (float64 with float64 x), contiguous */
  nanossm_tensor final_state;   /* optional output (B,R,C): the state after the last step */
  nanossm_tensor cu_seqlens;    /* optional (N+1,) int32/int64 offsets of N packed sequences (B = 1):
                                   0 = cu[0] <= cu[1] <= ... <= cu[N] = T; the states are then
                                   (N,R,C). Host values are checked; device values are not
                                   (that would synchronise): bad ones give wrong results only.
                                   On CUDA devices, packed calls with states take R*C < 2^31
                                   (else NANOSSM_ERR_UNSUPPORTED). */
  void* workspace;              /* device scratch of nanossm_scan_workspace_size() bytes,
                                   256-byte aligned; may be NULL when that size is 0 */
  int64_t workspace_bytes;
  int64_t max_seqlen;           /* (since 0.2) with cu_seqlens: the longest sequence's length if
                                   known, else 0. A hint for the launch plan only: any value
                                   >= 0 gives equally accurate results (the bits may differ, as
                                   the plan does), and the workspace size does not depend on it.
                                   Device offsets cannot be read without a sync, so the plan
                                   otherwise assumes sequences of similar length; a pack whose
                                   one sequence holds most of T runs 2.5x faster forward, 3.3x
                                   backward with it (H200). Host offsets (CPU calls) give it
                                   exactly. */
} nanossm_scan_options;

/* Backward options. Zero-initialise, then set what you need, like nanossm_scan_options. */
typedef struct nanossm_backward_options {
  uint32_t struct_size;              /* sizeof(nanossm_backward_options) */
  uint32_t flags;                    /* NANOSSM_SCAN_REVERSE: the forward ran in reverse */
  nanossm_tensor initial_state;      /* the forward's initial state, if it had one (packed
                                        sequences need it: A[s-1] also decays it) */
  nanossm_tensor grad_final_state;   /* optional (S,R,C) float32: dL/d(final state) */
  nanossm_tensor grad_initial_state; /* optional output (S,R,C) float32: dL/d(initial state);
                                        required with cu_seqlens and initial_state */
  nanossm_tensor cu_seqlens;         /* the forward's packed sequences, if any */
  void* workspace;                   /* nanossm_scan_backward_workspace_size() bytes, 256-aligned */
  int64_t workspace_bytes;
  int64_t max_seqlen;                /* (since 0.2) as nanossm_scan_options.max_seqlen */
} nanossm_backward_options;

/* NANOSSM_BUILDING_LIBRARY: set by the library's own build (its exports are generated without
 * const qualifiers); users never define it. */
#ifndef NANOSSM_BUILDING_LIBRARY

/* Runtime version: NANOSSM_VERSION of the loaded library. */
int32_t nanossm_version(void);

/* Static text for a status, e.g. "invalid argument". Never NULL. */
const char* nanossm_status_string(int32_t status);

/* Message of the last failed call on this thread, e.g. "x: expected 4 dims (B,T,R,C), got 3";
 * "" when the last call succeeded. Valid until the next nanossm call on the same thread. */
const char* nanossm_last_error(void);

/* 1 if this library has the CUDA backend (libnanossm.so), 0 for the CPU-only flavour. */
int32_t nanossm_has_cuda(void);

/* Diagnostics of the library's Go runtime, for leak checks: live goroutines and bytes of Go heap
 * in use. Either pointer may be NULL. */
int32_t nanossm_runtime_stats(int64_t* goroutines, int64_t* heap_bytes);

/* Device scratch that nanossm_scan needs for these arguments, in bytes (0 = none). */
int32_t nanossm_scan_workspace_size(const nanossm_tensor* A, const nanossm_tensor* x,
                                    const nanossm_tensor* out, const nanossm_scan_options* options,
                                    int32_t device, int64_t* bytes);

/* out = scan(A, x). A (B,T,R) float32; x and out (B,T,R,C) of one dtype (float32, float16,
 * bfloat16 on CUDA; float32, float64 on the CPU). out may be x itself (same layout) for an
 * in-place scan, and must not otherwise overlap it. options may be NULL. */
int32_t nanossm_scan(const nanossm_tensor* A, const nanossm_tensor* x, const nanossm_tensor* out,
                     const nanossm_scan_options* options, int32_t device, void* stream);

/* Device scratch that nanossm_scan_backward needs for these arguments, in bytes (0 = none). */
int32_t nanossm_scan_backward_workspace_size(const nanossm_tensor* A, const nanossm_tensor* x,
                                             const nanossm_tensor* out, const nanossm_tensor* grad_out,
                                             const nanossm_tensor* grad_x, const nanossm_tensor* grad_A,
                                             const nanossm_backward_options* options, int32_t device,
                                             int64_t* bytes);

/* The gradients of out = scan(A, x) (with the same options), in one pass over x, out and
 * grad_out = dL/dout:
 *     grad_x[j]  = sum_{t>=j} exp(A[t] - A[j]) * grad_out[t]          (a reverse scan)
 *     grad_A[t]  = sum_c (grad_out[t] * out[t] - x[t] * grad_x[t])     (negated for reverse)
 *     grad_initial_state = exp(A[s] - A[s-1]) * grad_x[s]             (s: a sequence's first step)
 * grad_final_state joins grad_out at the last step. x, out, grad_out and grad_x share x's shape
 * and dtype; grad_x may be grad_out itself (same layout), and overlaps nothing else. grad_A is
 * (B,T,R) in A's dtype. Results are deterministic (no atomics). */
int32_t nanossm_scan_backward(const nanossm_tensor* A, const nanossm_tensor* x, const nanossm_tensor* out,
                              const nanossm_tensor* grad_out, const nanossm_tensor* grad_x,
                              const nanossm_tensor* grad_A, const nanossm_backward_options* options,
                              int32_t device, void* stream);

#endif /* NANOSSM_BUILDING_LIBRARY */

#ifdef __cplusplus
}
#endif

#endif /* NANOSSM_H */
