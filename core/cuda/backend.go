// Package cuda is the CUDA backend: it runs the plans of core on the kernels of
// kernels/scan.cu through gorgonia.org/cu, in the device's primary context (the one PyTorch
// uses), on the caller's stream, without ever synchronising the host.
//
// Importing this package links libcuda and runs gorgonia.org/cu's init, which calls cuInit and
// exits the process if it fails: only load a binary that imports it where CUDA can start
// (python/nanossm/_loader.py probes cuInit first).
package cuda

/*
#include <cuda.h>
*/
import "C"

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"sync"
	"unsafe"

	"github.com/nanossm/nanossm/core"
	"github.com/nanossm/nanossm/kernels"
	"gorgonia.org/cu"
)

func init() {
	core.RegisterCUDA(backend{})
	if v, err := strconv.Atoi(os.Getenv("NANOSSM_TUNE_WARPS")); err == nil {
		core.TuneWarps = int64(v)
	}
}

// maxDevices bounds the per-device state table.
const maxDevices = 64

// device is what is loaded once per GPU: its primary context and the module's functions.
type device struct {
	once sync.Once
	err  error
	ctx  cu.CUContext
	fns  map[string]cu.Function
}

var devices [maxDevices]device

// deviceCount is read once: the visible devices of a process do not change.
var deviceCount = sync.OnceValues(cu.NumDevices)

// errName turns a gorgonia.org/cu error into the CUDA error name (CUDA_ERROR_...).
func errName(err error) string {
	v := reflect.ValueOf(err)
	if v.Kind() != reflect.Int {
		return err.Error()
	}
	return cErrName(C.CUresult(v.Int()))
}

func cErrName(r C.CUresult) string {
	var s *C.char
	if C.cuGetErrorName(r, &s) != C.CUDA_SUCCESS || s == nil {
		return fmt.Sprintf("CUDA error %d", int(r))
	}
	return C.GoString(s)
}

func cudaErr(op string, err error) error { return core.CUDAError(op, errName(err)) }

// withContext makes ctx current on this OS thread for f, then restores what was current.
// A cgo export runs on the caller's thread, so this is PyTorch's thread: its current context
// is normally this same primary context already.
func withContext(ctx cu.CUContext, f func() error) error {
	prev, err := cu.CurrentContext()
	if err != nil {
		return cudaErr("cuCtxGetCurrent", err)
	}
	if prev != ctx {
		if err := cu.SetCurrentContext(ctx); err != nil {
			return cudaErr("cuCtxSetCurrent", err)
		}
		defer cu.SetCurrentContext(prev) //nolint:errcheck // restoring; nothing to report to
	}
	return f()
}

func getDevice(ordinal int) (*device, error) {
	n, err := deviceCount()
	if err != nil {
		return nil, cudaErr("cuDeviceGetCount", err)
	}
	if ordinal >= n || ordinal >= maxDevices {
		return nil, core.Invalid("device", "cuda:%d does not exist (%d CUDA devices visible)", ordinal, n)
	}
	d := &devices[ordinal]
	d.once.Do(func() { d.err = d.load(ordinal) })
	return d, d.err
}

func (d *device) load(ordinal int) error {
	dev, err := cu.GetDevice(ordinal)
	if err != nil {
		return cudaErr("cuDeviceGet", err)
	}
	if d.ctx, err = dev.RetainPrimaryCtx(); err != nil {
		return cudaErr("cuDevicePrimaryCtxRetain", err)
	}
	return withContext(d.ctx, func() error {
		mod, err := cu.LoadData(string(kernels.Fatbin))
		if err != nil {
			return cudaErr("cuModuleLoadData", err)
		}
		d.fns = map[string]cu.Function{}
		for _, name := range core.ScanKernelNames() {
			fn, err := mod.Function(name)
			if err != nil {
				return cudaErr("cuModuleGetFunction("+name+")", err)
			}
			// staged rows of x live in dynamic shared memory: allow the most a plan asks for
			cfn := *(*C.CUfunction)(unsafe.Pointer(&fn))
			if r := C.cuFuncSetAttribute(cfn, C.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, C.int(core.ScanMaxSharedBytes)); r != C.CUDA_SUCCESS {
				return core.CUDAError("cuFuncSetAttribute("+name+")", cErrName(r))
			}
			d.fns[name] = fn
		}
		return nil
	})
}

type backend struct{}

func (backend) Name() string { return "cuda" }

func (backend) WorkspaceSize(a *core.ScanArgs, p core.Problem) (int64, error) {
	return core.PlanScan(a, p).Workspace, nil
}

// rawStream reinterprets the caller's CUstream handle as a cu.Stream (a struct holding just
// that handle; the package offers no constructor from a raw handle).
func rawStream(s uintptr) cu.Stream {
	var st cu.Stream
	if unsafe.Sizeof(st) != unsafe.Sizeof(s) {
		panic("cu.Stream is not a bare CUstream handle")
	}
	*(*uintptr)(unsafe.Pointer(&st)) = s
	return st
}

func (backend) Scan(a *core.ScanArgs, p core.Problem) error {
	d, err := getDevice(a.Device)
	if err != nil {
		return err
	}
	pl := core.PlanScan(a, p)
	blocks := pl.Tiles * pl.Chunks
	if blocks > 1<<31-1 {
		return core.Unsupported("x: %d blocks exceed the grid limit", blocks)
	}
	fn, ok := d.fns[pl.Kernel]
	if !ok {
		return core.Internal("no kernel %q for %v (vector width %d)", pl.Kernel, p.DType, pl.Vec)
	}
	flags := int64(0)
	if p.Reverse {
		flags |= 1
	}
	x, o, A := a.X.Strides, a.Out.Strides, a.A.Strides
	// Order and meaning fixed by NANOSSM_FWD in kernels/scan.cu; every slot is 64 bits.
	params := [...]int64{
		int64(a.A.Data), int64(a.X.Data), int64(a.Out.Data),
		int64(a.InitialState.Data), int64(a.FinalState.Data), int64(a.Workspace),
		int64(a.CuSeqlens.Data), 0,
		p.B, p.T, p.R, p.C,
		A[0], A[1], A[2],
		x[0], x[1], x[2], x[3],
		o[0], o[1], o[2], o[3],
		flags, pl.Chunks, pl.Tiles,
	}
	var ptrs [len(params)]unsafe.Pointer
	for i := range params {
		ptrs[i] = unsafe.Pointer(&params[i])
	}
	stream := rawStream(a.Stream)
	return withContext(d.ctx, func() error {
		if pl.Workspace > 0 { // the look-back's "unwritten" pattern (kernels/scan.cu)
			if err := cu.MemsetD32Async(cu.DevicePtr(a.Workspace), 0xffffffff, pl.Workspace/4, stream); err != nil {
				return cudaErr("cuMemsetD32Async(workspace)", err)
			}
		}
		if err := fn.Launch(int(blocks), 1, 1, 32, int(pl.Warps), 1, int(pl.Shared), stream, ptrs[:]); err != nil {
			return cudaErr("cuLaunchKernel("+pl.Kernel+")", err)
		}
		return nil
	})
}
