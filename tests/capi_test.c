/* C ABI test: includes only include/nanossm.h, links libnanossm (either flavour), runs a CPU scan
 * of fresh random inputs against a double-precision reference computed here, checks that every
 * output element was written, and checks the error path (status, message naming the argument,
 * the process surviving, and a good call afterwards still working). Linked against the CUDA
 * flavour on a machine with a GPU, it also runs the scan on device 0 (memory through the driver
 * API, opened with dlopen so no CUDA header is needed) and checks that result the same way. */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanossm.h"

static int failures;
#define CHECK(cond, ...)                        \
  do {                                          \
    if (!(cond)) {                              \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);             \
      fprintf(stderr, "\n");                    \
      failures++;                               \
    }                                           \
  } while (0)

static nanossm_tensor make(void* data, int32_t dtype, int ndim, const int64_t* shape) {
  nanossm_tensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.dtype = dtype;
  t.ndim = ndim;
  int64_t acc = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    t.shape[i] = shape[i];
    t.strides[i] = acc;
    acc *= shape[i];
  }
  return t;
}

static double uniform(void) { return (double)rand() / RAND_MAX; }

/* The scan on device 0 through the CUDA driver API: returns the status, fills out_host. */
typedef int (*cu_fn)();
static int gpu_scan(nanossm_tensor tA, nanossm_tensor tx, nanossm_tensor to, float* out_host, size_t nA, size_t nx) {
  void* cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (!cuda) return -1;
  cu_fn cuInit = (cu_fn)dlsym(cuda, "cuInit"), retain = (cu_fn)dlsym(cuda, "cuDevicePrimaryCtxRetain"),
        setctx = (cu_fn)dlsym(cuda, "cuCtxSetCurrent"), alloc = (cu_fn)dlsym(cuda, "cuMemAlloc_v2"),
        htod = (cu_fn)dlsym(cuda, "cuMemcpyHtoD_v2"), dtoh = (cu_fn)dlsym(cuda, "cuMemcpyDtoH_v2"),
        sync = (cu_fn)dlsym(cuda, "cuCtxSynchronize"), memfree = (cu_fn)dlsym(cuda, "cuMemFree_v2");
  void* ctx = NULL;
  unsigned long long dA = 0, dx = 0, dout = 0, dws = 0;
  if (cuInit(0) || retain(&ctx, 0) || setctx(ctx)) return -2;
  if (alloc(&dA, nA * 4) || alloc(&dx, nx * 4) || alloc(&dout, nx * 4)) return -3;
  if (htod(dA, tA.data, nA * 4) || htod(dx, tx.data, nx * 4)) return -4;
  tA.data = (void*)dA;
  tx.data = (void*)dx;
  to.data = (void*)dout;
  nanossm_scan_options opt;
  memset(&opt, 0, sizeof opt);
  opt.struct_size = sizeof opt;
  int64_t bytes = 0;
  int st = nanossm_scan_workspace_size(&tA, &tx, &to, &opt, 0, &bytes);
  if (st) return st;
  if (bytes && alloc(&dws, (size_t)bytes)) return -5;
  opt.workspace = (void*)dws;
  opt.workspace_bytes = bytes;
  st = nanossm_scan(&tA, &tx, &to, &opt, 0, NULL);
  if (st) return st;
  if (sync() || dtoh(out_host, dout, nx * 4)) return -6;
  memfree(dA);
  memfree(dx);
  memfree(dout);
  if (dws) memfree(dws);
  return 0;
}

static double rel_error(const float* A, const float* x, const float* out, int B, int T, int R, int C) {
  double num = 0, den = 0;
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c)
        for (int t = 0; t < T; ++t) {
          double ref = 0;
          for (int j = 0; j <= t; ++j)
            ref += exp((double)A[(b * T + t) * R + r] - A[(b * T + j) * R + r]) * x[((b * T + j) * R + r) * C + c];
          double got = out[((b * T + t) * R + r) * C + c];
          num += (got - ref) * (got - ref);
          den += ref * ref;
        }
  return sqrt(num / den);
}

/* nanossm_scan_backward on the CPU against double sums of SPEC's formulas:
 * dx[j] = sum_{t>=j} exp(A[t]-A[j]) g[t],  dA[t] = sum_c (g[t] out[t] - x[t] dx[t]). */
static void backward_check(const float* A, const float* x, const float* out, int B, int T, int R, int C) {
  size_t nx = (size_t)B * T * R * C, nA = (size_t)B * T * R;
  float *g = malloc(sizeof(float) * nx), *dx = malloc(sizeof(float) * nx), *dA = malloc(sizeof(float) * nA);
  for (size_t i = 0; i < nx; ++i) g[i] = (float)(2 * uniform() - 1), dx[i] = NAN;
  for (size_t i = 0; i < nA; ++i) dA[i] = NAN;
  const int64_t sA[] = {B, T, R}, sx[] = {B, T, R, C};
  nanossm_tensor tA = make((void*)A, NANOSSM_FLOAT32, 3, sA), tx = make((void*)x, NANOSSM_FLOAT32, 4, sx),
                 to = make((void*)out, NANOSSM_FLOAT32, 4, sx), tg = make(g, NANOSSM_FLOAT32, 4, sx),
                 tdx = make(dx, NANOSSM_FLOAT32, 4, sx), tdA = make(dA, NANOSSM_FLOAT32, 3, sA);
  nanossm_backward_options opt;
  memset(&opt, 0, sizeof opt);
  opt.struct_size = sizeof opt;
  int64_t ws = -1;
  int st = nanossm_scan_backward_workspace_size(&tA, &tx, &to, &tg, &tdx, &tdA, &opt, NANOSSM_CPU, &ws);
  CHECK(st == NANOSSM_OK && ws == 0, "backward workspace on the CPU: %d, %lld", st, (long long)ws);
  st = nanossm_scan_backward(&tA, &tx, &to, &tg, &tdx, &tdA, &opt, NANOSSM_CPU, NULL);
  CHECK(st == NANOSSM_OK, "backward failed: %d %s", st, nanossm_last_error());
  double ex = 0, nxr = 0, ea = 0, na = 0;
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) {
        double da = 0;
        for (int c = 0; c < C; ++c) {
          size_t i = ((size_t)(b * T + t) * R + r) * C + c;
          double ref = 0;
          for (int u = t; u < T; ++u)
            ref += exp((double)A[(b * T + u) * R + r] - A[(b * T + t) * R + r]) * g[((size_t)(b * T + u) * R + r) * C + c];
          ex += (dx[i] - ref) * (dx[i] - ref), nxr += ref * ref;
          da += (double)g[i] * out[i] - (double)x[i] * ref;
        }
        double got = dA[(b * T + t) * R + r];
        ea += (got - da) * (got - da), na += da * da;
      }
  double rx = sqrt(ex / nxr), ra = sqrt(ea / na);
  CHECK(rx <= 1e-5 && rx == rx, "backward dx relative error %g", rx);
  CHECK(ra <= 1e-4 && ra == ra, "backward dA relative error %g", ra);
  /* the backward names its own arguments */
  tg.ndim = 3;
  st = nanossm_scan_backward(&tA, &tx, &to, &tg, &tdx, &tdA, &opt, NANOSSM_CPU, NULL);
  CHECK(st == NANOSSM_ERR_INVALID_ARGUMENT && strstr(nanossm_last_error(), "grad_out: expected 4 dims"),
        "3-dim grad_out: %d %s", st, nanossm_last_error());
  printf("capi_test: backward rel err dx %.2e dA %.2e\n", rx, ra);
  free(g); free(dx); free(dA);
}

int main(void) {
  CHECK(nanossm_version() == NANOSSM_VERSION, "runtime version %d != header %d", nanossm_version(), NANOSSM_VERSION);
  CHECK(strcmp(nanossm_status_string(NANOSSM_ERR_INVALID_ARGUMENT), "invalid argument") == 0, "status string");

  enum { B = 2, T = 301, R = 3, C = 5 }; /* T over several 128-step chunks on the GPU */
  srand(1234);
  float *A = malloc(sizeof(float) * B * T * R), *x = malloc(sizeof(float) * B * T * R * C);
  float *out = malloc(sizeof(float) * B * T * R * C), *hT = malloc(sizeof(float) * B * R * C);
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < R; ++r) {
      double acc = 0;
      for (int t = 0; t < T; ++t) {
        acc += -0.2 * uniform();
        A[(b * T + t) * R + r] = (float)acc;
      }
    }
  for (int i = 0; i < B * T * R * C; ++i) x[i] = (float)(2 * uniform() - 1);
  for (int i = 0; i < B * T * R * C; ++i) out[i] = NAN; /* poison: unwritten elements fail */

  const int64_t sA[] = {B, T, R}, sx[] = {B, T, R, C}, sh[] = {B, R, C};
  nanossm_tensor tA = make(A, NANOSSM_FLOAT32, 3, sA), tx = make(x, NANOSSM_FLOAT32, 4, sx);
  nanossm_tensor to = make(out, NANOSSM_FLOAT32, 4, sx);
  nanossm_scan_options opt;
  memset(&opt, 0, sizeof opt);
  opt.struct_size = sizeof opt;
  opt.final_state = make(hT, NANOSSM_FLOAT32, 3, sh);
  int64_t ws = -1;
  int st = nanossm_scan_workspace_size(&tA, &tx, &to, &opt, NANOSSM_CPU, &ws);
  CHECK(st == NANOSSM_OK && ws == 0, "workspace size on the CPU: status %d, %lld bytes", st, (long long)ws);
  st = nanossm_scan(&tA, &tx, &to, &opt, NANOSSM_CPU, NULL);
  CHECK(st == NANOSSM_OK, "scan failed: %d %s", st, nanossm_last_error());

  double rel = rel_error(A, x, out, B, T, R, C);
  for (int b = 0; b < B; ++b) /* the final state is the last step's output, in float32 */
    for (int i = 0; i < R * C; ++i) {
      float want = out[((b * T + T - 1) * R) * C + i];
      CHECK(hT[b * R * C + i] == want, "final state (%d,%d): %g vs %g", b, i, hT[b * R * C + i], want);
    }
  CHECK(rel <= 1e-5 && rel == rel, "relative error %g > 1e-5 (NaN means an unwritten output)", rel);

  backward_check(A, x, out, B, T, R, C);

  /* error path: x with 3 dims */
  nanossm_tensor bad = make(x, NANOSSM_FLOAT32, 3, sx);
  st = nanossm_scan(&tA, &bad, &to, NULL, NANOSSM_CPU, NULL);
  CHECK(st == NANOSSM_ERR_INVALID_ARGUMENT, "3-dim x: status %d", st);
  CHECK(strstr(nanossm_last_error(), "x: expected 4 dims (B,T,R,C), got 3") != NULL, "message: %s", nanossm_last_error());
  st = nanossm_scan(&tA, NULL, &to, NULL, NANOSSM_CPU, NULL);
  CHECK(st == NANOSSM_ERR_INVALID_ARGUMENT && strstr(nanossm_last_error(), "x:"), "NULL x: %d %s", st, nanossm_last_error());
  opt.struct_size = 3;
  st = nanossm_scan(&tA, &tx, &to, &opt, NANOSSM_CPU, NULL);
  CHECK(st == NANOSSM_ERR_INVALID_ARGUMENT && strstr(nanossm_last_error(), "struct_size"), "struct_size: %d", st);
  /* max_seqlen (since 0.2): refused by name when negative or without cu_seqlens; a caller built
   * against 0.1's header passes the struct without it, which is taken (the field never read) */
  opt.struct_size = sizeof opt;
  opt.max_seqlen = -1;
  st = nanossm_scan(&tA, &tx, &to, &opt, NANOSSM_CPU, NULL);
  CHECK(st == NANOSSM_ERR_INVALID_ARGUMENT && strstr(nanossm_last_error(), "max_seqlen: expected >= 0"),
        "max_seqlen -1: %d %s", st, nanossm_last_error());
  opt.max_seqlen = 7;
  st = nanossm_scan(&tA, &tx, &to, &opt, NANOSSM_CPU, NULL);
  CHECK(st == NANOSSM_ERR_INVALID_ARGUMENT && strstr(nanossm_last_error(), "max_seqlen: given (7) without cu_seqlens"),
        "max_seqlen alone: %d %s", st, nanossm_last_error());
  opt.struct_size = offsetof(nanossm_scan_options, max_seqlen); /* 0.1's size; the field reads 0 */
  for (int i = 0; i < B * T * R * C; ++i) out[i] = NAN;
  st = nanossm_scan(&tA, &tx, &to, &opt, NANOSSM_CPU, NULL);
  CHECK(st == NANOSSM_OK && rel_error(A, x, out, B, T, R, C) <= 1e-5, "0.1's options struct: %d %s", st,
        nanossm_last_error());
  opt.max_seqlen = 0;
  /* the library still works after errors */
  opt.struct_size = sizeof opt;
  st = nanossm_scan(&tA, &tx, &to, &opt, NANOSSM_CPU, NULL);
  CHECK(st == NANOSSM_OK && nanossm_last_error()[0] == '\0', "good call after errors: %d", st);
  if (!nanossm_has_cuda()) {
    st = nanossm_scan(&tA, &tx, &to, NULL, 0, NULL);
    CHECK(st == NANOSSM_ERR_NO_CUDA, "device call in the CPU flavour: status %d", st);
  } else {
    for (int i = 0; i < B * T * R * C; ++i) out[i] = NAN;
    st = gpu_scan(tA, tx, to, out, B * T * R, B * T * R * C);
    CHECK(st == 0, "GPU scan: status %d %s", st, nanossm_last_error());
    double gerr = rel_error(A, x, out, B, T, R, C);
    CHECK(gerr <= 1e-5 && gerr == gerr, "GPU relative error %g > 1e-5", gerr);
    printf("capi_test: GPU rel err %.2e\n", gerr);
  }

  printf("capi_test: rel err %.2e, has_cuda %d\n", rel, nanossm_has_cuda());
  printf("capi_test: %s (%d failures)\n", failures ? "FAIL" : "OK", failures);
  free(A); free(x); free(out); free(hT);
  return failures ? 1 : 0;
}
