package cuda

/*
#include <stdlib.h>
#include <string.h>
#include <cuda.h>

// cuLaunchKernel with programmatic stream serialization: the kernel may begin launching before
// the one ahead of it in the stream completes (that one lets it: griddepcontrol.launch_dependents)
// and waits for it where it must (griddepcontrol.wait). Blocks are 32 x by threads.
static CUresult launch_early(CUfunction f, unsigned gx, unsigned by, unsigned shared, CUstream s, void **params) {
  CUlaunchAttribute attr;
  memset(&attr, 0, sizeof attr);
  attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
  attr.value.programmaticStreamSerializationAllowed = 1;
  CUlaunchConfig cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.gridDimX = gx, cfg.gridDimY = 1, cfg.gridDimZ = 1;
  cfg.blockDimX = 32, cfg.blockDimY = by, cfg.blockDimZ = 1;
  cfg.sharedMemBytes = shared, cfg.hStream = s, cfg.attrs = &attr, cfg.numAttrs = 1;
  return cuLaunchKernelEx(&cfg, f, params, NULL);
}
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

// launch is one kernel launch on the caller's stream. early: it may begin before the launch ahead
// of it completes (programmatic stream serialization), because its kernel waits for that one
// (griddepcontrol.wait) before it touches anything that one writes; run launches it so on devices
// that have it (Device.EarlyLaunch), in calls whose workspace is reset by a kernel.
type launch struct {
	name          string
	blocks, warps int64
	shared        int64
	params        params
	early         bool
}

// launches are a call's launches, in order: at most three passes, a dA reduction and dA's
// initial-state term (run enqueues the workspace's reset before them).
type launches struct {
	l [5]launch
	n int
}

// add appends a launch and returns its (empty) parameters.
func (ls *launches) add(name string, blocks, warps, shared int64) *params {
	l := &ls.l[ls.n]
	ls.n++
	l.name, l.blocks, l.warps, l.shared, l.params.n, l.early = name, blocks, warps, shared, 0, false
	return &l.params
}

// mayLaunchEarly marks the launch added last as early (see launch).
func (ls *launches) mayLaunchEarly() { ls.l[ls.n-1].early = true }

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

// resetLaunch is the look-back workspace's reset (lookback bytes at ws, a multiple of 256) by
// a kernel, for devices that launch early (Device.EarlyLaunch): the scan after it may begin while
// it runs. Its grid is at most one block per SM, so every block of it is running (and has let the
// scan launch) before the scan's blocks take the SMs. (Measured on the H200: a memset and the
// launch gap after it cost 2.5-3 us per call, 11% of the copy time on 2,1024,64,64 fp32.)
func (d *device) resetLaunch(ws uintptr, lookback int64) launch {
	n16 := lookback / 16
	l := launch{name: core.KernelWSReset, blocks: max(1, min((n16+255)/256, d.info.SMs)), warps: 8}
	l.params.add(int64(ws), n16)
	return l
}

// function is l's kernel, once l is known to fit the device.
func (d *device) function(l *launch) (C.CUfunction, error) {
	fn, ok := d.fns[l.name]
	if !ok {
		return nil, core.Internal("no kernel %q in the module", l.name)
	}
	if l.blocks > 1<<31-1 {
		return nil, core.Unsupported("x: %d blocks exceed the grid limit", l.blocks)
	}
	if l.shared > d.info.MaxShared {
		return nil, core.Unsupported("x: %s stages %d bytes of shared memory per block; this device allows %d",
			l.name, l.shared, d.info.MaxShared)
	}
	return fn, nil
}

// enqueue launches l's kernel fn on cstream with its parameters copied into b; early: with
// programmatic stream serialization (launch_early).
func enqueue(fn C.CUfunction, l *launch, b argBlock, cstream C.CUstream, early bool) error {
	for k := 0; k < l.params.n; k++ {
		b.argv[k] = C.uint64_t(l.params.v[k])
	}
	if early {
		if r := C.launch_early(fn, C.uint(l.blocks), C.uint(l.warps), C.uint(l.shared), cstream, &b.argp[0]); r != C.CUDA_SUCCESS {
			return core.CUDAError("cuLaunchKernelEx("+l.name+")", cErrName(r))
		}
		return nil
	}
	if r := C.cuLaunchKernel(fn, C.uint(l.blocks), 1, 1, 32, C.uint(l.warps), 1, C.uint(l.shared), cstream,
		&b.argp[0], nil); r != C.CUDA_SUCCESS {
		return core.CUDAError("cuLaunchKernel("+l.name+")", cErrName(r))
	}
	return nil
}

// run enqueues the workspace reset (look-back bytes) and the launches, in order, on the
// caller's stream, in the device's primary context (made current for the call if it is not).
// Every launch is checked against the device first: a refused call enqueues nothing.
func (d *device) run(stream uintptr, ws uintptr, lookback int64, ls *launches) error {
	var fns [len(ls.l)]C.CUfunction
	for i := 0; i < ls.n; i++ {
		fn, err := d.function(&ls.l[i])
		if err != nil {
			return err
		}
		fns[i] = fn
	}
	early := lookback > 0 && d.info.EarlyLaunch
	var reset launch
	var resetFn C.CUfunction
	if early {
		reset = d.resetLaunch(ws, lookback)
		var err error
		if resetFn, err = d.function(&reset); err != nil {
			return err
		}
	}
	prev, err := enter(d.ctx)
	if err != nil {
		return err
	}
	defer leave(d.ctx, prev)
	cstream := C.CUstream(unsafe.Pointer(stream))
	b := getArgBlock()
	defer putArgBlock(b)
	if early {
		// A memset refuses memory the driver does not know (pageable host memory, even where HMM
		// lets kernels reach it); so does this query, by name. Device, pinned host and managed
		// memory pass, as with the memset. (One driver call, on calls that have a workspace:
		// those run for 10 us or more on the GPU.)
		var mt C.uint
		if r := C.cuPointerGetAttribute(unsafe.Pointer(&mt), C.CU_POINTER_ATTRIBUTE_MEMORY_TYPE, C.CUdeviceptr(ws)); r != C.CUDA_SUCCESS {
			return core.CUDAError("cuPointerGetAttribute(workspace)", cErrName(r))
		}
		if err := enqueue(resetFn, &reset, b, cstream, false); err != nil {
			return err
		}
	} else if lookback > 0 { // the look-back's "unwritten" pattern (kernels/scan.cu)
		if r := C.cuMemsetD32Async(C.CUdeviceptr(ws), 0xffffffff, C.size_t(lookback/4), cstream); r != C.CUDA_SUCCESS {
			return core.CUDAError("cuMemsetD32Async(workspace)", cErrName(r))
		}
	}
	for i := 0; i < ls.n; i++ {
		if err := enqueue(fns[i], &ls.l[i], b, cstream, early && ls.l[i].early); err != nil {
			return err
		}
	}
	return nil
}
