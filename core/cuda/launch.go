package cuda

/*
#include <stdlib.h>
#include <cuda.h>
*/
import "C"

import (
	"sync"
	"unsafe"

	"github.com/nanossm/nanossm/core"
)

// The launch path of a call allocates nothing and makes one cgo call per launch (small calls
// are dominated by host time): parameters are written into fixed arrays, and their values reach
// cuLaunchKernel through C memory reused from call to call.

// maxParams bounds a kernel's parameters (the backward scan kernels have the most: 42).
const maxParams = 48

// params is one launch's parameter values; every kernel parameter is one 64-bit slot.
type params struct {
	v [maxParams]int64
	n int
}

// add appends parameter values and returns p.
func (p *params) add(vs ...int64) *params {
	if p.n+len(vs) > maxParams {
		panic("core/cuda: more than maxParams kernel parameters")
	}
	p.n += copy(p.v[p.n:], vs)
	return p
}

// launch is one kernel launch on the caller's stream.
type launch struct {
	name          string
	blocks, warps int64
	shared        int64
	params        params
}

// launches are a call's launches, in order: at most three passes, a dA reduction and dA's
// initial-state term.
type launches struct {
	l [5]launch
	n int
}

// add appends a launch and returns its (empty) parameters.
func (ls *launches) add(name string, blocks, warps, shared int64) *params {
	l := &ls.l[ls.n]
	ls.n++
	l.name, l.blocks, l.warps, l.shared, l.params.n = name, blocks, warps, shared, 0
	return &l.params
}

// argBlock is C memory for one launch's parameters: argv holds the values and argp[i] =
// &argv[i] is the array cuLaunchKernel reads. It cannot be Go memory (cgo forbids passing C a
// Go pointer to memory holding Go pointers).
type argBlock struct {
	argv *[maxParams]C.uint64_t
	argp *[maxParams]unsafe.Pointer
}

// argBlocks keeps the blocks of finished calls for the next ones (a bounded free list: blocks
// are C memory, which a sync.Pool would leak when it drops items).
var argBlocks struct {
	sync.Mutex
	free []argBlock
}

const maxFreeArgBlocks = 64

func getArgBlock() argBlock {
	argBlocks.Lock()
	if n := len(argBlocks.free); n > 0 {
		b := argBlocks.free[n-1]
		argBlocks.free = argBlocks.free[:n-1]
		argBlocks.Unlock()
		return b
	}
	argBlocks.Unlock()
	m := C.malloc(C.size_t(2 * maxParams * 8))
	if m == nil {
		panic("core/cuda: out of host memory for kernel parameters")
	}
	b := argBlock{argv: (*[maxParams]C.uint64_t)(m), argp: (*[maxParams]unsafe.Pointer)(unsafe.Add(m, maxParams*8))}
	for i := range b.argp {
		b.argp[i] = unsafe.Pointer(&b.argv[i])
	}
	return b
}

func putArgBlock(b argBlock) {
	argBlocks.Lock()
	kept := len(argBlocks.free) < maxFreeArgBlocks
	if kept {
		argBlocks.free = append(argBlocks.free, b)
	}
	argBlocks.Unlock()
	if !kept {
		C.free(unsafe.Pointer(b.argv))
	}
}

// run enqueues the workspace reset (look-back bytes) and the launches, in order, on the
// caller's stream, in the device's primary context (made current for the call if it is not).
func (d *device) run(stream uintptr, ws uintptr, lookback int64, ls *launches) error {
	prev, err := enter(d.ctx)
	if err != nil {
		return err
	}
	defer leave(d.ctx, prev)
	cstream := C.CUstream(unsafe.Pointer(stream))
	if lookback > 0 { // the look-back's "unwritten" pattern (kernels/scan.cu)
		if r := C.cuMemsetD32Async(C.CUdeviceptr(ws), 0xffffffff, C.size_t(lookback/4), cstream); r != C.CUDA_SUCCESS {
			return core.CUDAError("cuMemsetD32Async(workspace)", cErrName(r))
		}
	}
	b := getArgBlock()
	defer putArgBlock(b)
	for i := 0; i < ls.n; i++ {
		l := &ls.l[i]
		fn, ok := d.fns[l.name]
		if !ok {
			return core.Internal("no kernel %q in the module", l.name)
		}
		if l.blocks > 1<<31-1 {
			return core.Unsupported("x: %d blocks exceed the grid limit", l.blocks)
		}
		if l.shared > d.info.MaxShared {
			return core.Unsupported("x: %s stages %d bytes of shared memory per block; this device allows %d",
				l.name, l.shared, d.info.MaxShared)
		}
		for k := 0; k < l.params.n; k++ {
			b.argv[k] = C.uint64_t(l.params.v[k])
		}
		if r := C.cuLaunchKernel(fn, C.uint(l.blocks), 1, 1, 32, C.uint(l.warps), 1, C.uint(l.shared), cstream,
			&b.argp[0], nil); r != C.CUDA_SUCCESS {
			return core.CUDAError("cuLaunchKernel("+l.name+")", cErrName(r))
		}
	}
	return nil
}
