/* The test's view of the fake CUDA driver (fake_cuda.c): what it recorded, and its controls. */
#ifndef NANOSSM_FAKE_CUDA_H
#define NANOSSM_FAKE_CUDA_H
#include <stdint.h>

#define MAX_PARAMS 64

typedef struct {
  int kind;  /* 0 launch, 1 memset */
  int fn;    /* launch: the kernel, for fake_fn_name */
  int early; /* launch: by cuLaunchKernelEx with programmatic stream serialization */
  unsigned grid[3], block[3], shared;
  uint64_t stream, ctx; /* the stream given, the context current at the call */
  int nparams;
  int64_t params[MAX_PARAMS]; /* every kernel parameter is one 64-bit slot */
  uint64_t dst;               /* memset: cuMemsetD32Async(dst, value, count, stream) */
  unsigned value;
  uint64_t count;
} fake_record;

void fake_set_param_count(const char *prefix, int n);
void fake_set_devices(int n);
void fake_set_recording(int on);
void fake_set_optin_shared(int dev, int bytes);
void fake_set_cc_major(int dev, int major);
void fake_reset(void);
int fake_records(void);
const fake_record *fake_record_at(int i);
int fake_violations(void);
int fake_ctx_sets(void);
int fake_modules_loaded(void);
const char *fake_fn_name(int fn);
int fake_fn_max_shared(int fn);
void fake_set_current(uintptr_t ctx);
uintptr_t fake_current(void);

#endif
