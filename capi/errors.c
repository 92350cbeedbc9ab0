// Thread-local last-error message of the C ABI (C memory only: no Go pointer reaches C).
#include <stdlib.h>

static __thread char* last_error;

// nanossm_set_last_error takes ownership of msg (malloc'd, may be NULL for "no error").
void nanossm_set_last_error(char* msg) {
  free(last_error);
  last_error = msg;
}

const char* nanossm_last_error(void) { return last_error ? last_error : ""; }
