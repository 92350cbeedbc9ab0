/* A fake CUDA driver (libcuda.so.1) for host-side tests of the CUDA backend on machines without
 * a GPU (core/cuda/fake_test.go; `make test-go` builds it into build/fakecuda).
 *
 * Imaginary devices of 132 SMs (one unless the test asks for more). The calls the backend makes succeed, and every launch and
 * memset is recorded with its arguments for the test to read through the fake_* functions. Calls
 * a stream-ordered library must never make on its hot path (synchronise the host, allocate or
 * free memory, copy) fail and are counted as violations. Every other driver function comes from
 * the generated stub (tools/cuda_stub.py, weak symbols) and fails with CUDA_ERROR_STUB_LIBRARY.
 * cuda.h's macros give each function below its versioned symbol (cuMemAlloc -> cuMemAlloc_v2).
 */
#include <cuda.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fake_cuda.h"

#define FAKE_SMS 132
#define MAX_DEVICES 8
#define MAX_FNS 64
#define MAX_RECORDS 512
#define MAX_COUNTS 16

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char fn_names[MAX_FNS][96];
static int max_shared[MAX_DEVICES][MAX_FNS]; /* per module (device) and function */
static int n_fns;
static fake_record records[MAX_RECORDS];
static int n_records, violations, ctx_sets, modules_loaded;
static struct { char prefix[64]; int n; } counts[MAX_COUNTS];
static int n_counts;
static int n_devices = 1, recording = 1;
static int optin[MAX_DEVICES]; /* shared memory a block may opt in to; 0: an H200's 227 KB */
static int optin_of(int dev) { return optin[dev] ? optin[dev] : 232448; }
/* a function's static shared memory (ptxas gives the scan kernels 9-22 KB): 16 KB, and 17 KB in
   the packed long forwards (per kernel, as the driver reports it: core Device.BlockShared) */
#define FAKE_STATIC_SHARED (16 * 1024)
static int static_shared(int i) {
  return FAKE_STATIC_SHARED + (strstr(fn_names[i], "_packed_long_") || strstr(fn_names[i], "_packed_nostate_long_") ? 1024 : 0);
}
static int cc_major[MAX_DEVICES]; /* compute capability major; 0: 8 (before early launch) */
static int cc_major_of(int dev) { return cc_major[dev] ? cc_major[dev] : 8; }
static __thread CUcontext current;

/* device d's primary context is 0x1000 + d; its module 0x2000 + d */
#define PRIMARY_OF(d) ((CUcontext)(uintptr_t)(0x1000 + (d)))
static int device_of(CUcontext ctx) {
  uintptr_t v = (uintptr_t)ctx;
  return v >= 0x1000 && v < 0x1000 + (uintptr_t)n_devices ? (int)(v - 0x1000) : -1;
}

/* ---- the test's side ---- */

/* A kernel's parameter count, by name prefix (the longest registered prefix wins): a launch
 * passes an array of pointers without its length, so the test says how many to read. */
void fake_set_param_count(const char *prefix, int n) {
  pthread_mutex_lock(&mu);
  if (n_counts < MAX_COUNTS && n <= MAX_PARAMS) {
    snprintf(counts[n_counts].prefix, sizeof counts[0].prefix, "%s", prefix);
    counts[n_counts++].n = n;
  }
  pthread_mutex_unlock(&mu);
}

/* How many devices the fake has (1 to MAX_DEVICES; set it before the backend first asks). */
void fake_set_devices(int n) { n_devices = n < 1 ? 1 : n > MAX_DEVICES ? MAX_DEVICES : n; }
/* Device dev's opt-in shared memory per block (before the backend first loads dev). */
void fake_set_optin_shared(int dev, int bytes) {
  if (dev >= 0 && dev < MAX_DEVICES) optin[dev] = bytes;
}
void fake_set_cc_major(int dev, int major) {
  if (dev >= 0 && dev < MAX_DEVICES) cc_major[dev] = major;
}
/* Whether launches and memsets are recorded (they are still checked when not). */
void fake_set_recording(int on) { recording = on; }

void fake_reset(void) {
  pthread_mutex_lock(&mu);
  n_records = violations = ctx_sets = 0;
  pthread_mutex_unlock(&mu);
}

int fake_records(void) { return n_records; }
int fake_violations(void) { return violations; }
int fake_ctx_sets(void) { return ctx_sets; }
int fake_modules_loaded(void) { return modules_loaded; }
const fake_record *fake_record_at(int i) { return i >= 0 && i < n_records ? &records[i] : NULL; }
const char *fake_fn_name(int fn) { return fn >= 0 && fn < n_fns ? fn_names[fn] : ""; }
int fake_fn_max_shared(int fn) { return fn >= 0 && fn < n_fns ? max_shared[0][fn] : -1; } /* cuda:0's */
/* Makes ctx current on the calling thread (0: none), as a caller such as PyTorch would have. */
void fake_set_current(uintptr_t ctx) { current = (CUcontext)ctx; }
uintptr_t fake_current(void) { return (uintptr_t)current; }

static fake_record *next_record(void) {
  if (n_records >= MAX_RECORDS) return NULL;
  fake_record *r = &records[n_records++];
  memset(r, 0, sizeof *r);
  return r;
}

static int param_count(const char *name) {
  int best = -1, best_len = -1;
  for (int i = 0; i < n_counts; i++) {
    int len = (int)strlen(counts[i].prefix);
    if (len > best_len && strncmp(name, counts[i].prefix, len) == 0) best = counts[i].n, best_len = len;
  }
  return best;
}

/* ---- the driver's side ---- */

CUresult cuInit(unsigned int flags) { return flags == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE; }

CUresult cuDeviceGetCount(int *n) {
  *n = n_devices;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice *dev, int ordinal) {
  if (ordinal < 0 || ordinal >= n_devices) return CUDA_ERROR_INVALID_DEVICE;
  *dev = ordinal;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int *v, CUdevice_attribute attr, CUdevice dev) {
  if (dev < 0 || dev >= n_devices) return CUDA_ERROR_INVALID_DEVICE;
  switch (attr) {
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = FAKE_SMS; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = optin_of(dev); break;
    /* an SM: a block's opt-in limit and the driver's 1 KB reservation (an H200's 228 KB, an
       A100's 164 KB) */
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: *v = optin_of(dev) + 1024; break;
    case CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK: *v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = cc_major_of(dev); break;
    default: *v = 0;
  }
  return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev) {
  if (dev < 0 || dev >= n_devices) return CUDA_ERROR_INVALID_DEVICE;
  *ctx = PRIMARY_OF(dev);
  return CUDA_SUCCESS;
}

CUresult cuCtxGetCurrent(CUcontext *ctx) {
  *ctx = current;
  return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext ctx) {
  pthread_mutex_lock(&mu);
  ctx_sets++;
  pthread_mutex_unlock(&mu);
  current = ctx;
  return CUDA_SUCCESS;
}

CUresult cuModuleLoadData(CUmodule *mod, const void *image) {
  uint32_t magic;
  memcpy(&magic, image, 4);
  if (magic != 0xBA55ED50u) return CUDA_ERROR_INVALID_IMAGE; /* a fatbin's magic number */
  const int d = device_of(current);
  if (d < 0) return CUDA_ERROR_INVALID_CONTEXT;
  pthread_mutex_lock(&mu);
  modules_loaded++;
  pthread_mutex_unlock(&mu);
  *mod = (CUmodule)(uintptr_t)(0x2000 + d);
  return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction *fn, CUmodule mod, const char *name) {
  const uintptr_t m = (uintptr_t)mod;
  if (m < 0x2000 || m >= 0x2000 + (uintptr_t)n_devices) return CUDA_ERROR_INVALID_HANDLE;
  pthread_mutex_lock(&mu);
  int i = 0;
  while (i < n_fns && strcmp(fn_names[i], name) != 0) i++;
  if (i == n_fns && n_fns < MAX_FNS) snprintf(fn_names[n_fns++], sizeof fn_names[0], "%s", name);
  pthread_mutex_unlock(&mu);
  if (i >= MAX_FNS) return CUDA_ERROR_OUT_OF_MEMORY;
  *fn = (CUfunction)(uintptr_t)(1 + (m - 0x2000) * MAX_FNS + i); /* a function of this module */
  return CUDA_SUCCESS;
}

/* A function handle's device (its module's) and index in fn_names; false if it is none. */
static int fn_of(CUfunction f, int *dev, int *i) {
  const uintptr_t v = (uintptr_t)f;
  if (v < 1 || v > (uintptr_t)n_devices * MAX_FNS) return 0;
  *dev = (int)((v - 1) / MAX_FNS), *i = (int)((v - 1) % MAX_FNS);
  return *i < n_fns;
}

CUresult cuFuncGetAttribute(int *v, CUfunction_attribute attr, CUfunction fn) {
  int d, i;
  if (!fn_of(fn, &d, &i)) return CUDA_ERROR_INVALID_HANDLE;
  *v = attr == CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES ? static_shared(i) : 0;
  return CUDA_SUCCESS;
}

/* (as the driver: dynamic and static shared memory together within the opt-in limit) */
CUresult cuFuncSetAttribute(CUfunction fn, CUfunction_attribute attr, int value) {
  int d, i;
  if (!fn_of(fn, &d, &i)) return CUDA_ERROR_INVALID_HANDLE;
  if (attr == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
    if (value + static_shared(i) > optin_of(d)) return CUDA_ERROR_INVALID_VALUE;
    max_shared[d][i] = value;
  }
  return CUDA_SUCCESS;
}

static CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                       unsigned bz, unsigned shared, CUstream stream, void **params, void **extra, int early) {
  int d, i;
  if (!fn_of(f, &d, &i) || extra != NULL) return CUDA_ERROR_INVALID_HANDLE;
  if (device_of(current) != d) return CUDA_ERROR_INVALID_CONTEXT; /* its module's context only */
  if (shared > (unsigned)max_shared[d][i] && shared > 48 * 1024) return CUDA_ERROR_INVALID_VALUE;
  int n = param_count(fn_names[i]);
  if (n < 0) return CUDA_ERROR_NOT_FOUND; /* the test did not say how many parameters */
  if (!recording) return CUDA_SUCCESS;
  pthread_mutex_lock(&mu);
  fake_record *r = next_record();
  if (r) {
    r->fn = i, r->early = early;
    r->grid[0] = gx, r->grid[1] = gy, r->grid[2] = gz;
    r->block[0] = bx, r->block[1] = by, r->block[2] = bz;
    r->shared = shared, r->stream = (uint64_t)(uintptr_t)stream, r->ctx = (uint64_t)(uintptr_t)current;
    r->nparams = n;
    for (int k = 0; k < n; k++) memcpy(&r->params[k], params[k], 8); /* every slot is 64-bit */
  }
  pthread_mutex_unlock(&mu);
  return r ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared, CUstream stream, void **params, void **extra) {
  return launch(f, gx, gy, gz, bx, by, bz, shared, stream, params, extra, 0);
}

/* Only the one attribute the backend sets, and only on a device that has it (compute 9.0+). */
CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra) {
  int d, i;
  if (!c || !fn_of(f, &d, &i)) return CUDA_ERROR_INVALID_HANDLE;
  if (c->numAttrs != 1 || !c->attrs || c->attrs[0].id != CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION ||
      c->attrs[0].value.programmaticStreamSerializationAllowed != 1 || cc_major_of(d) < 9)
    return CUDA_ERROR_INVALID_VALUE;
  return launch(f, c->gridDimX, c->gridDimY, c->gridDimZ, c->blockDimX, c->blockDimY, c->blockDimZ,
                c->sharedMemBytes, c->hStream, params, extra, 1);
}

/* Every address is device memory to the fake, except 0 and those below 0x1000 (host memory). */
CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attr, CUdeviceptr p) {
  if (attr != CU_POINTER_ATTRIBUTE_MEMORY_TYPE || !data) return CUDA_ERROR_INVALID_VALUE;
  if (p < 0x1000) return CUDA_ERROR_INVALID_VALUE;
  *(unsigned *)data = CU_MEMORYTYPE_DEVICE;
  return CUDA_SUCCESS;
}

CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned int value, size_t n, CUstream stream) {
  if (device_of(current) < 0) return CUDA_ERROR_INVALID_CONTEXT;
  if (!recording) return CUDA_SUCCESS;
  pthread_mutex_lock(&mu);
  fake_record *r = next_record();
  if (r) {
    r->kind = 1, r->dst = dst, r->value = value, r->count = n;
    r->stream = (uint64_t)(uintptr_t)stream, r->ctx = (uint64_t)(uintptr_t)current;
  }
  pthread_mutex_unlock(&mu);
  return r ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuGetErrorName(CUresult r, const char **s) {
  static const char *names[] = {[CUDA_ERROR_INVALID_VALUE] = "CUDA_ERROR_INVALID_VALUE",
                                [CUDA_ERROR_NOT_FOUND] = "CUDA_ERROR_NOT_FOUND",
                                [CUDA_ERROR_STUB_LIBRARY] = "CUDA_ERROR_STUB_LIBRARY"};
  *s = (unsigned)r < sizeof names / sizeof names[0] && names[r] ? names[r] : "CUDA_ERROR_FAKE";
  return CUDA_SUCCESS;
}

/* ---- what a stream-ordered library must not do per call: counted, and refused ---- */
#define VIOLATION                   \
  do {                              \
    pthread_mutex_lock(&mu);        \
    violations++;                   \
    pthread_mutex_unlock(&mu);      \
    return CUDA_ERROR_NOT_PERMITTED; \
  } while (0)

CUresult cuCtxSynchronize(void) { VIOLATION; }
CUresult cuStreamSynchronize(CUstream s) { (void)s; VIOLATION; }
CUresult cuStreamQuery(CUstream s) { (void)s; VIOLATION; }
CUresult cuMemAlloc(CUdeviceptr *p, size_t n) { (void)p, (void)n; VIOLATION; }
CUresult cuMemAllocAsync(CUdeviceptr *p, size_t n, CUstream s) { (void)p, (void)n, (void)s; VIOLATION; }
CUresult cuMemFree(CUdeviceptr p) { (void)p; VIOLATION; }
CUresult cuMemcpyHtoD(CUdeviceptr d, const void *h, size_t n) { (void)d, (void)h, (void)n; VIOLATION; }
CUresult cuMemcpyDtoH(void *h, CUdeviceptr d, size_t n) { (void)d, (void)h, (void)n; VIOLATION; }
CUresult cuMemcpy(CUdeviceptr d, CUdeviceptr s, size_t n) { (void)d, (void)s, (void)n; VIOLATION; }
CUresult cuMemsetD32(CUdeviceptr d, unsigned v, size_t n) { (void)d, (void)v, (void)n; VIOLATION; }
