// Command capi is the C ABI of nanossm (include/nanossm.h), built with
// `go build -buildmode=c-shared` into libnanossm.so (tag cuda) or libnanossm_cpu.so.
// It holds exports and error mapping only: every export converts its arguments, calls core,
// records the error message for nanossm_last_error and recovers any panic into a status.
package main

/*
#cgo CFLAGS: -I${SRCDIR}/../include -DNANOSSM_BUILDING_LIBRARY
#include <stdlib.h>
#include "nanossm.h"
void nanossm_set_last_error(char* msg);
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"

	"github.com/nanossm/nanossm/core"
)

func main() {}

// finish records err for nanossm_last_error and returns its status.
func finish(err error) C.int32_t {
	if err == nil {
		C.nanossm_set_last_error(nil)
		return C.int32_t(core.StatusOK)
	}
	C.nanossm_set_last_error(C.CString(err.Error()))
	return C.int32_t(core.StatusOf(err))
}

// guard turns a panic in f into NANOSSM_ERR_INTERNAL with the panic's text.
func guard(f func() error) (status C.int32_t) {
	defer func() {
		if r := recover(); r != nil {
			status = finish(core.Internal("internal error (recovered panic): %v", r))
		}
	}()
	return finish(f())
}

var statusStrings sync.Map // core.Status -> *C.char, allocated once, never freed

//export nanossm_version
func nanossm_version() C.int32_t { return core.VersionNumber }

//export nanossm_status_string
func nanossm_status_string(status C.int32_t) *C.char {
	s := core.Status(status)
	if v, ok := statusStrings.Load(s); ok {
		return v.(*C.char)
	}
	v, _ := statusStrings.LoadOrStore(s, C.CString(s.String()))
	return v.(*C.char)
}

//export nanossm_has_cuda
func nanossm_has_cuda() C.int32_t {
	if core.HasCUDA() {
		return 1
	}
	return 0
}

//export nanossm_runtime_stats
func nanossm_runtime_stats(goroutines, heapBytes *C.int64_t) C.int32_t {
	return guard(func() error {
		if goroutines != nil {
			*goroutines = C.int64_t(runtime.NumGoroutine())
		}
		if heapBytes != nil {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			*heapBytes = C.int64_t(m.HeapAlloc)
		}
		return nil
	})
}

//export nanossm_scan_workspace_size
func nanossm_scan_workspace_size(A, x, out *C.nanossm_tensor, options *C.nanossm_scan_options,
	device C.int32_t, bytes *C.int64_t) C.int32_t {
	return guard(func() error {
		if bytes == nil {
			return core.Invalid("bytes", "pointer is NULL")
		}
		c := newCall()
		defer c.release()
		args, err := c.scanArgs(A, x, out, options, device, nil)
		if err != nil {
			return err
		}
		n, err := core.WorkspaceSize(args)
		*bytes = C.int64_t(n)
		return err
	})
}

//export nanossm_scan
func nanossm_scan(A, x, out *C.nanossm_tensor, options *C.nanossm_scan_options,
	device C.int32_t, stream unsafe.Pointer) C.int32_t {
	return guard(func() error {
		c := newCall()
		defer c.release()
		args, err := c.scanArgs(A, x, out, options, device, stream)
		if err != nil {
			return err
		}
		return core.Scan(args)
	})
}

//export nanossm_scan_backward_workspace_size
func nanossm_scan_backward_workspace_size(A, x, out, gradOut, gradX, gradA *C.nanossm_tensor,
	options *C.nanossm_backward_options, device C.int32_t, bytes *C.int64_t) C.int32_t {
	return guard(func() error {
		if bytes == nil {
			return core.Invalid("bytes", "pointer is NULL")
		}
		c := newCall()
		defer c.release()
		args, err := c.backwardArgs(A, x, out, gradOut, gradX, gradA, options, device, nil)
		if err != nil {
			return err
		}
		n, err := core.BackwardWorkspaceSize(args)
		*bytes = C.int64_t(n)
		return err
	})
}

//export nanossm_scan_backward
func nanossm_scan_backward(A, x, out, gradOut, gradX, gradA *C.nanossm_tensor,
	options *C.nanossm_backward_options, device C.int32_t, stream unsafe.Pointer) C.int32_t {
	return guard(func() error {
		c := newCall()
		defer c.release()
		args, err := c.backwardArgs(A, x, out, gradOut, gradX, gradA, options, device, stream)
		if err != nil {
			return err
		}
		return core.ScanBackward(args)
	})
}

// maxDescriptors is the most tensor descriptors one call carries (the backward: six tensors and
// four in its options).
const maxDescriptors = 10

// call holds one call's converted arguments and the shapes and strides their tensors point
// into. Calls take one from a pool and give it back when they return, so the host path of a
// call allocates nothing (small calls are dominated by host time). Nothing keeps a reference
// past the call: backends run (CPU) or enqueue (CUDA) before returning.
type call struct {
	dims [maxDescriptors][2][core.MaxDims]int64
	used int
	scan core.ScanArgs
	bwd  core.BackwardArgs
}

var calls = sync.Pool{New: func() any { return new(call) }}

func newCall() *call { return calls.Get().(*call) }

func (c *call) release() {
	c.used, c.scan, c.bwd = 0, core.ScanArgs{}, core.BackwardArgs{}
	calls.Put(c)
}

// tensor converts a C tensor descriptor; optional descriptors with data == NULL are absent.
func (c *call) tensor(name string, t *C.nanossm_tensor, optional bool) (core.Tensor, error) {
	if t == nil {
		if optional {
			return core.Tensor{}, nil
		}
		return core.Tensor{}, core.Invalid(name, "descriptor pointer is NULL")
	}
	if optional && t.data == nil {
		return core.Tensor{}, nil
	}
	nd := int(t.ndim)
	if nd < 1 || nd > C.NANOSSM_MAX_DIMS {
		return core.Tensor{}, core.Invalid(name, "ndim must be 1..%d, got %d", C.NANOSSM_MAX_DIMS, nd)
	}
	d := &c.dims[c.used]
	c.used++
	ct := core.Tensor{Data: uintptr(t.data), DType: core.DType(t.dtype), Shape: d[0][:nd:nd], Strides: d[1][:nd:nd]}
	for i := 0; i < nd; i++ {
		ct.Shape[i], ct.Strides[i] = int64(t.shape[i]), int64(t.strides[i])
	}
	return ct, nil
}

// slot is one descriptor to convert and where it goes.
type slot struct {
	name string
	src  *C.nanossm_tensor
	dst  *core.Tensor
}

// convert fills each slot's tensor (optional ones may be absent), stopping at the first error.
func (c *call) convert(optional bool, slots ...slot) error {
	for _, t := range slots {
		var err error
		if *t.dst, err = c.tensor(t.name, t.src, optional); err != nil {
			return err
		}
	}
	return nil
}

// checkOptions checks an options struct's size (the ABI's version check: this version's, want,
// or 0.1's, which ends before max_seqlen, at v01) and its flags; full: the struct has max_seqlen
// (a 0.1 struct ends before it: never read past the caller's).
func checkOptions(structName string, size, want, v01, flags C.uint32_t) (full bool, err error) {
	if size != want && size != v01 {
		return false, core.Invalid("options", "struct_size must be sizeof(%s) = %d (or %d, version 0.1's), got %d",
			structName, want, v01, size)
	}
	if flags&^C.NANOSSM_SCAN_REVERSE != 0 {
		return false, core.Invalid("options", "unknown flags %#x", uint32(flags&^C.NANOSSM_SCAN_REVERSE))
	}
	return size == want, nil
}

func (c *call) scanArgs(A, x, out *C.nanossm_tensor, o *C.nanossm_scan_options, device C.int32_t,
	stream unsafe.Pointer) (*core.ScanArgs, error) {
	args := &c.scan
	*args = core.ScanArgs{Device: int(device), Stream: uintptr(stream)}
	if err := c.convert(false, slot{"A", A, &args.A}, slot{"x", x, &args.X}, slot{"out", out, &args.Out}); err != nil || o == nil {
		return args, err
	}
	full, err := checkOptions("nanossm_scan_options", o.struct_size, C.uint32_t(unsafe.Sizeof(*o)),
		C.uint32_t(unsafe.Offsetof(o.max_seqlen)), o.flags)
	if err != nil {
		return args, err
	}
	if full {
		args.MaxSeqlen = int64(o.max_seqlen)
	}
	args.Reverse = o.flags&C.NANOSSM_SCAN_REVERSE != 0
	args.Workspace, args.WorkspaceLen = uintptr(o.workspace), int64(o.workspace_bytes)
	return args, c.convert(true, slot{"initial_state", &o.initial_state, &args.InitialState},
		slot{"final_state", &o.final_state, &args.FinalState}, slot{"cu_seqlens", &o.cu_seqlens, &args.CuSeqlens})
}

func (c *call) backwardArgs(A, x, out, gradOut, gradX, gradA *C.nanossm_tensor, o *C.nanossm_backward_options,
	device C.int32_t, stream unsafe.Pointer) (*core.BackwardArgs, error) {
	args := &c.bwd
	*args = core.BackwardArgs{Device: int(device), Stream: uintptr(stream)}
	if err := c.convert(false, slot{"A", A, &args.A}, slot{"x", x, &args.X}, slot{"out", out, &args.Out},
		slot{"grad_out", gradOut, &args.GradOut}, slot{"grad_x", gradX, &args.GradX},
		slot{"grad_A", gradA, &args.GradA}); err != nil || o == nil {
		return args, err
	}
	full, err := checkOptions("nanossm_backward_options", o.struct_size, C.uint32_t(unsafe.Sizeof(*o)),
		C.uint32_t(unsafe.Offsetof(o.max_seqlen)), o.flags)
	if err != nil {
		return args, err
	}
	if full {
		args.MaxSeqlen = int64(o.max_seqlen)
	}
	args.Reverse = o.flags&C.NANOSSM_SCAN_REVERSE != 0
	args.Workspace, args.WorkspaceLen = uintptr(o.workspace), int64(o.workspace_bytes)
	return args, c.convert(true, slot{"initial_state", &o.initial_state, &args.InitialState},
		slot{"grad_final_state", &o.grad_final_state, &args.GradFinalState},
		slot{"grad_initial_state", &o.grad_initial_state, &args.GradInitialState},
		slot{"cu_seqlens", &o.cu_seqlens, &args.CuSeqlens})
}
