//go:build cuda && fakecuda

// The test's side of the fake CUDA driver (tests/fakecuda): built only with the fakecuda tag,
// linked against build/fakecuda/libcuda.so instead of a real driver (make test-go). cgo cannot
// appear in _test.go files, so the bindings live here.

package cuda

/*
#cgo CFLAGS: -I${SRCDIR}/../../tests/fakecuda
#include <stdlib.h>
#include "fake_cuda.h"
*/
import "C"

import "unsafe"

// fakeRecord is one call the fake driver recorded: a launch, or a memset when Memset is true.
type fakeRecord struct {
	Memset      bool
	Early       bool // launched early (cuLaunchKernelEx, programmatic stream serialization)
	Kernel      string
	Grid, Block [3]uint32
	Shared      uint32
	Stream, Ctx uint64
	Params      []int64
	Dst         uint64
	Value       uint32
	Count       uint64
}

func fakeSetParamCount(prefix string, n int) {
	cs := C.CString(prefix)
	defer C.free(unsafe.Pointer(cs))
	C.fake_set_param_count(cs, C.int(n))
}

// fakeSetDevices sets how many devices the fake has (before the backend first counts them).
func fakeSetDevices(n int) { C.fake_set_devices(C.int(n)) }

// fakeSetOptinShared sets device dev's opt-in shared memory per block (before it is loaded).
func fakeSetOptinShared(dev, bytes int) { C.fake_set_optin_shared(C.int(dev), C.int(bytes)) }

// fakeSetCCMajor sets device dev's compute capability major (before it is loaded; default 8).
func fakeSetCCMajor(dev, major int) { C.fake_set_cc_major(C.int(dev), C.int(major)) }

// fakeSetRecording turns the recording of launches and memsets on or off.
func fakeSetRecording(on bool) {
	v := 0
	if on {
		v = 1
	}
	C.fake_set_recording(C.int(v))
}

func fakeReset()             { C.fake_reset() }
func fakeViolations() int    { return int(C.fake_violations()) }
func fakeCtxSets() int       { return int(C.fake_ctx_sets()) }
func fakeModulesLoaded() int { return int(C.fake_modules_loaded()) }

// fakeSetCurrent makes ctx the calling thread's current context, as a caller would have it
// (0: none; fakePrimary: the device's primary context). Lock the goroutine's thread first.
func fakeSetCurrent(ctx uintptr) { C.fake_set_current(C.uintptr_t(ctx)) }
func fakeCurrent() uintptr       { return uintptr(C.fake_current()) }

// fakePrimary is the fake's primary context of device 0 (device d's is fakePrimary + d).
const fakePrimary = 0x1000

func fakeRecords() []fakeRecord {
	n := int(C.fake_records())
	out := make([]fakeRecord, n)
	for i := range out {
		r := C.fake_record_at(C.int(i))
		o := &out[i]
		o.Memset = r.kind == 1
		o.Stream, o.Ctx = uint64(r.stream), uint64(r.ctx)
		if o.Memset {
			o.Dst, o.Value, o.Count = uint64(r.dst), uint32(r.value), uint64(r.count)
			continue
		}
		o.Kernel = C.GoString(C.fake_fn_name(r.fn))
		o.Early = r.early != 0
		for k := 0; k < 3; k++ {
			o.Grid[k], o.Block[k] = uint32(r.grid[k]), uint32(r.block[k])
		}
		o.Shared = uint32(r.shared)
		o.Params = make([]int64, int(r.nparams))
		for k := range o.Params {
			o.Params[k] = int64(r.params[k])
		}
	}
	return out
}

// fakeMaxShared is the dynamic shared memory limit the backend set on a kernel (-1: unknown).
func fakeMaxShared(kernel string) int {
	for i := 0; i < 64; i++ {
		if C.GoString(C.fake_fn_name(C.int(i))) == kernel {
			return int(C.fake_fn_max_shared(C.int(i)))
		}
	}
	return -1
}
