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

// The calling thread's current context, returned by value (see enter).
typedef struct { CUcontext ctx; CUresult r; } nanossm_current_ctx;
static nanossm_current_ctx nanossm_get_current(void) {
	nanossm_current_ctx c = {NULL, CUDA_SUCCESS};
	c.r = cuCtxGetCurrent(&c.ctx);
	return c;
}
*/
import "C"

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
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
	if v, err := strconv.Atoi(os.Getenv("NANOSSM_TUNE_PASSES")); err == nil {
		core.TunePasses = int64(v)
	}
	if v, err := strconv.Atoi(os.Getenv("NANOSSM_TUNE_GROUP")); err == nil {
		core.TuneGroup = int64(v) // (groupChunks takes it when in 1..core.MaxGroup)
	}
	if v, err := strconv.Atoi(os.Getenv("NANOSSM_TUNE_BWD_STEPS")); err == nil && (v == 4 || v == 8 || v == 16) {
		core.BackwardSteps = int64(v)
	}
	if v, err := strconv.Atoi(os.Getenv("NANOSSM_TUNE_BWD_MAX_WARPS")); err == nil && v >= 1 && v <= 16 {
		core.BackwardMaxWarps = int64(v)
	}
	// (up to twice the module's default: a module built with NANOSSM_FWD_STEPS=24 or 32; the
	// dynamic shared memory allowed in load follows it and the backward's knobs)
	if v, err := strconv.Atoi(os.Getenv("NANOSSM_TUNE_FWD_STEPS")); err == nil && v >= 1 && v <= 2*core.ScanSteps {
		core.ForwardSteps = int64(v)
	}
	noEarlyLaunch = os.Getenv("NANOSSM_TUNE_NO_EARLY_LAUNCH") == "1"
	if v, err := strconv.Atoi(os.Getenv("NANOSSM_TUNE_SEGMENTS")); err == nil {
		core.TuneSegments = int64(v) // (packedSegments takes it when in 1..core.MaxSegments)
	}
	if v, err := strconv.Atoi(os.Getenv("NANOSSM_TUNE_LATE_XY")); err == nil {
		core.TuneLateXY = int64(v) // (lateXY takes 1 or 2)
	}
	if v, err := strconv.Atoi(os.Getenv("NANOSSM_TUNE_FWD16_BYTES")); err == nil && (v == 8 || v == 16) {
		core.TuneForward16Bytes = int64(v)
	}
	if v, err := strconv.Atoi(os.Getenv("NANOSSM_TUNE_LONG")); err == nil {
		core.TuneLong = int64(v) // (longChunks takes 1 or 2)
	}
}

// noEarlyLaunch (NANOSSM_TUNE_NO_EARLY_LAUNCH=1, a benchmarking knob) resets the workspace with
// a memset and launches the scan after it, as on devices before compute capability 9.0.
var noEarlyLaunch bool

// maxDevices bounds the per-device state table.
const maxDevices = 64

// device is what is loaded once per GPU: its primary context and the module's functions.
type device struct {
	once sync.Once
	err  error
	ctx  C.CUcontext // the device's primary context
	fns  map[string]C.CUfunction
	info core.Device
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

// enter makes ctx current on this OS thread and returns what was current, for leave. A cgo
// export runs on the caller's thread, so this is PyTorch's thread: its current context is
// normally this same primary context already, and then nothing is switched. (The current
// context comes back by value: a Go pointer handed to C would put it on the heap every call.)
func enter(ctx C.CUcontext) (prev C.CUcontext, err error) {
	cur := C.nanossm_get_current()
	if cur.r != C.CUDA_SUCCESS {
		return nil, core.CUDAError("cuCtxGetCurrent", cErrName(cur.r))
	}
	if cur.ctx != ctx {
		if r := C.cuCtxSetCurrent(ctx); r != C.CUDA_SUCCESS {
			return nil, core.CUDAError("cuCtxSetCurrent", cErrName(r))
		}
	}
	return cur.ctx, nil
}

// leave restores the context enter found current.
func leave(ctx, prev C.CUcontext) {
	if prev != ctx {
		C.cuCtxSetCurrent(prev) // restoring; nothing to report to
	}
}

// attribute reads one attribute of device ordinal (name: for the error).
func attribute(ordinal int, attr C.CUdevice_attribute, name string) (int64, error) {
	var v C.int
	if r := C.cuDeviceGetAttribute(&v, attr, C.CUdevice(ordinal)); r != C.CUDA_SUCCESS {
		return 0, core.CUDAError("cuDeviceGetAttribute("+name+")", cErrName(r))
	}
	return int64(v), nil
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

func (d *device) load(ordinal int) (err error) {
	dev, err := cu.GetDevice(ordinal)
	if err != nil {
		return cudaErr("cuDeviceGet", err)
	}
	if d.info.SMs, err = attribute(ordinal, C.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "MULTIPROCESSOR_COUNT"); err != nil {
		return err
	}
	optin, err := attribute(ordinal, C.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN")
	if err != nil {
		return err
	}
	// (a planning hint, core Device.holds: where the driver does not tell, 0, unknown)
	smShared, errSM := attribute(ordinal, C.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR, "MAX_SHARED_MEMORY_PER_MULTIPROCESSOR")
	reserved, errRes := attribute(ordinal, C.CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK, "RESERVED_SHARED_MEMORY_PER_BLOCK")
	major, err := attribute(ordinal, C.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "COMPUTE_CAPABILITY_MAJOR")
	if err != nil {
		return err
	}
	d.info.EarlyLaunch = major >= 9 && !noEarlyLaunch
	primary, err := dev.RetainPrimaryCtx()
	if err != nil {
		return cudaErr("cuDevicePrimaryCtxRetain", err)
	}
	d.ctx = *(*C.CUcontext)(unsafe.Pointer(&primary)) // cu.CUContext holds just the handle
	prev, err := enter(d.ctx)
	if err != nil {
		return err
	}
	defer leave(d.ctx, prev)
	module := kernels.Fatbin
	if path := os.Getenv("NANOSSM_MODULE"); path != "" {
		// a benchmarking knob: time a variant build of kernels/scan.cu without relinking. It must
		// carry sm_90+ code of this source on a 9.0+ device (tools/variant_module.sh builds
		// sm_90): the scan launched early relies on its griddepcontrol.wait, which code built
		// for compute_80 lacks (then set NANOSSM_TUNE_NO_EARLY_LAUNCH=1)
		if module, err = os.ReadFile(path); err != nil {
			return core.Internal("NANOSSM_MODULE: %v", err)
		}
	}
	mod, err := cu.LoadData(string(module))
	if err != nil {
		return cudaErr("cuModuleLoadData", err)
	}
	d.fns, d.info.MaxShared = map[string]C.CUfunction{}, core.StagedSharedBytes()
	blocks := map[string]int64{} // scan kernels' static shared memory
	for _, name := range core.ScanKernelNames() {
		fn, err := mod.Function(name)
		if err != nil {
			return cudaErr("cuModuleGetFunction("+name+")", err)
		}
		// staged rows of x live in dynamic shared memory: allow the most a plan asks for, or
		// what the device's per-block limit leaves beside the kernel's static arrays (an A100's
		// 163 KB less up to 21.5 KB). The least of these is the device's MaxShared, which the
		// planner plans within and a launch is checked against (device.function).
		cfn := *(*C.CUfunction)(unsafe.Pointer(&fn))
		var static C.int
		if r := C.cuFuncGetAttribute(&static, C.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, cfn); r != C.CUDA_SUCCESS {
			return core.CUDAError("cuFuncGetAttribute("+name+")", cErrName(r))
		}
		allow := max(0, min(core.StagedSharedBytes(), optin-int64(static)))
		if r := C.cuFuncSetAttribute(cfn, C.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, C.int(allow)); r != C.CUDA_SUCCESS {
			return core.CUDAError("cuFuncSetAttribute("+name+")", cErrName(r))
		}
		d.fns[name], d.info.MaxShared = cfn, min(d.info.MaxShared, allow)
		if strings.HasPrefix(name, "nanossm_scan_") { // (a scan block's share of an SM: Device.holds)
			blocks[name] = int64(static)
		}
	}
	if errSM == nil && errRes == nil {
		for name := range blocks {
			blocks[name] += reserved
		}
		d.info.SMShared, d.info.BlockShared = smShared, blocks
	}
	return nil
}

type backend struct{}

func (backend) Name() string { return "cuda" }

// The workspace does not depend on the device (core's plan tests check it): no device is
// loaded to size it.
func (backend) WorkspaceSize(a *core.ScanArgs, p core.Problem) (int64, error) {
	return core.PlanScan(a, p, core.Device{}).Workspace, nil
}

func (backend) BackwardWorkspaceSize(a *core.BackwardArgs, p core.Problem) (int64, error) {
	return core.PlanBackward(a, p, core.Device{}).Workspace, nil
}

// flag bits of the scan kernels (F_* in kernels/scan.cu)
const (
	flagReverse    = 1
	flagUndecayed  = 2
	flagScaleFinal = 4
	flagNegDA      = 8
	flagSeqInt32   = 16
	flagAggOnly    = 32 // pass 1 of three
	flagPrefixed   = 64 // pass 3 of three
	// bits 8-15: the plan's carry group (F_GROUP_SHIFT), single pass only
	flagGroupShift = 8
	// bits 16-23: a packed single pass's segments (F_SEG_SHIFT)
	flagSegShift = 16
)

// nScanParams is the number of parameters scanParams writes.
const nScanParams = 26

// scanParams writes the nScanParams parameters every scan kernel starts with
// (NANOSSM_COMMON_PARAMS in kernels/scan.cu, order and meaning fixed there).
func scanParams(dst *params, a *core.ScanArgs, p core.Problem, pl core.ScanPlan, flags int64) {
	if p.Reverse {
		flags |= flagReverse
	}
	if a.CuSeqlens.DType == core.Int32 {
		flags |= flagSeqInt32
	}
	if pl.Group > 1 { // (single-pass plans only: core/plan.go)
		flags |= pl.Group << flagGroupShift
	}
	if pl.Segments > 1 { // (packed single-pass plans only)
		flags |= pl.Segments << flagSegShift
	}
	x, o, A := a.X.Strides, a.Out.Strides, a.A.Strides
	dst.add(int64(a.A.Data), int64(a.X.Data), int64(a.Out.Data),
		int64(a.InitialState.Data), int64(a.FinalState.Data), int64(a.Workspace),
		int64(a.CuSeqlens.Data), p.Seqs,
		p.B, p.T, p.R, p.C,
		A[0], A[1], A[2],
		x[0], x[1], x[2], x[3],
		o[0], o[1], o[2], o[3],
		flags, pl.Chunks, pl.Tiles)
}

// scanLaunches adds the launches of one scan plan for the scan s: the single pass, or three
// passes (aggregates, every chunk's prefix, the scan; kernels/scan.cu). A scan kernel's
// parameters are scanParams with flags and the pass's flag, then extra (the backward's; nil for
// the forward); the prefix kernel shares scanParams.
func scanLaunches(ls *launches, s *core.ScanArgs, p core.Problem, pl core.ScanPlan, flags int64, extra *params) {
	// Every pass launches early where the call resets its workspace by a kernel: the first behind
	// the reset, passes 2 and 3 behind the pass before them (pass 2 without a launch gap; pass 3's
	// blocks stage x while pass 2, a few latency-bound blocks, runs: pass 2 lets them launch at its
	// start, kernels/chunk_prefix.cuh). Each scan kernel waits before its look-back.
	scan := func(pass int64) {
		dst := ls.add(pl.Kernel, pl.Tiles*pl.Chunks, pl.Warps, pl.Shared)
		ls.mayLaunchEarly()
		scanParams(dst, s, p, pl, flags|pass)
		if extra != nil {
			dst.add(extra.v[:extra.n]...)
		}
	}
	if pl.Passes != 3 {
		scan(0)
		return
	}
	bwd := int64(0)
	if extra != nil {
		bwd = 1
	}
	scan(flagAggOnly)
	prefix := ls.add(pl.Prefix, pl.Tiles*pl.Groups, pl.PrefixWarps, 0)
	scanParams(prefix, s, p, pl, flags)
	prefix.add(bwd, pl.K, pl.Warps*pl.Steps)
	ls.mayLaunchEarly()
	scan(flagPrefixed)
}

func (backend) Scan(a *core.ScanArgs, p core.Problem) error {
	d, err := getDevice(a.Device)
	if err != nil {
		return err
	}
	pl := core.PlanScan(a, p, d.info)
	var ls launches
	scanLaunches(&ls, a, p, pl, 0, nil)
	return d.run(a.Stream, a.Workspace, pl.Lookback, &ls)
}

func (backend) Backward(a *core.BackwardArgs, p core.Problem) error {
	d, err := getDevice(a.Device)
	if err != nil {
		return err
	}
	pl := core.PlanBackward(a, p, d.info)
	s := a.ReverseScan()
	flags := int64(flagUndecayed)
	if !a.Reverse {
		flags |= flagScaleFinal
	} else {
		flags |= flagNegDA
	}
	part := int64(0)
	if pl.K > 1 {
		part = int64(a.Workspace) + pl.Partials
	}
	x, o, dA := a.X.Strides, a.Out.Strides, a.GradA.Strides
	// NANOSSM_BWD's extra parameters: the forward's x and out, dA, dA's partial sums, K
	var extra params
	extra.add(int64(a.X.Data), x[0], x[1], x[2], x[3], int64(a.Out.Data), o[0], o[1], o[2], o[3],
		int64(a.GradA.Data), dA[0], dA[1], dA[2], part, pl.K)
	var ls launches
	scanLaunches(&ls, &s, p, pl, flags, &extra)
	const threads = 256
	if pl.K > 1 {
		n := p.B * p.T * p.R
		ls.add(core.KernelDAReduce, min((n+threads-1)/threads, 4096), threads/32, 0).add(
			part, int64(a.GradA.Data), p.B, p.T, p.R, dA[0], dA[1], dA[2], pl.K)
	}
	if a.CuSeqlens.Present() && a.InitialState.Present() {
		n := p.Seqs * p.R
		ls.add(core.KernelDAH0Term, (n+threads-1)/threads, threads/32, 0).add(
			int64(a.InitialState.Data), int64(a.GradInitialState.Data), int64(a.CuSeqlens.Data),
			p.Seqs, p.T, p.R, p.C, int64(a.GradA.Data), dA[1], dA[2], seqFlag(a.CuSeqlens))
	}
	return d.run(a.Stream, a.Workspace, pl.Lookback, &ls)
}

func seqFlag(t core.Tensor) int64 {
	if t.DType == core.Int32 {
		return flagSeqInt32
	}
	return 0
}
