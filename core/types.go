// Package core validates scan calls, plans them and dispatches them to a backend: the CPU
// backend in this package (gonum) or the CUDA backend in core/cuda (gorgonia.org/cu).
//
// Tensors are described, not owned: an address, a dtype, sizes and strides in elements. The
// numbers below are part of the C ABI (include/nanossm.h) and never change meaning.
package core

import "fmt"

// DType is the element type of a tensor; values match nanossm_dtype in include/nanossm.h.
type DType int32

const (
	Float32  DType = 0
	Float16  DType = 1
	BFloat16 DType = 2
	Float64  DType = 3
	Int32    DType = 4
	Int64    DType = 5
)

// dtypeInfo is indexed by DType (an array, not a map: every call looks sizes up several times).
var dtypeInfo = [...]struct {
	name string
	size int64
}{
	Float32: {"float32", 4}, Float16: {"float16", 2}, BFloat16: {"bfloat16", 2},
	Float64: {"float64", 8}, Int32: {"int32", 4}, Int64: {"int64", 8},
}

func (d DType) known() bool { return d >= 0 && int(d) < len(dtypeInfo) }

func (d DType) String() string {
	if d.known() {
		return dtypeInfo[d].name
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// Size is the element size in bytes (0 for an unknown dtype).
func (d DType) Size() int64 {
	if d.known() {
		return dtypeInfo[d].size
	}
	return 0
}

// MaxDims is NANOSSM_MAX_DIMS of include/nanossm.h: the most dims a tensor descriptor has.
const MaxDims = 4

// Status is the stable result code of the C ABI; values match nanossm_status.
type Status int32

const (
	StatusOK              Status = 0
	StatusInvalidArgument Status = 1 // a shape, dtype, stride, pointer or option is wrong
	StatusUnsupported     Status = 2 // valid, but this build or device cannot do it
	StatusCUDA            Status = 3 // the CUDA driver returned an error; the message names it
	StatusNoCUDA          Status = 4 // a device call in a build or process without usable CUDA
	StatusInternal        Status = 5 // a bug: a recovered panic or a broken invariant
)

var statusText = map[Status]string{
	StatusOK:              "ok",
	StatusInvalidArgument: "invalid argument",
	StatusUnsupported:     "unsupported",
	StatusCUDA:            "CUDA error",
	StatusNoCUDA:          "CUDA not available",
	StatusInternal:        "internal error",
}

func (s Status) String() string {
	if t, ok := statusText[s]; ok {
		return t
	}
	return fmt.Sprintf("status(%d)", int32(s))
}

// Error carries a status and a message that names the argument at fault.
type Error struct {
	Status Status
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

func errorf(s Status, format string, args ...any) error {
	return &Error{Status: s, Msg: fmt.Sprintf(format, args...)}
}

// Invalid reports a bad argument: Invalid("x", "expected 4 dims (B,T,R,C), got %d", 3).
func Invalid(arg, format string, args ...any) error {
	return errorf(StatusInvalidArgument, "%s: %s", arg, fmt.Sprintf(format, args...))
}

// Unsupported reports a valid request that this build or device cannot serve.
func Unsupported(format string, args ...any) error {
	return errorf(StatusUnsupported, format, args...)
}

// NoCUDA reports a device call where CUDA cannot be used.
func NoCUDA(format string, args ...any) error { return errorf(StatusNoCUDA, format, args...) }

// CUDAError reports a failed driver call; name is the CUDA error name (CUDA_ERROR_...).
func CUDAError(op, name string) error { return errorf(StatusCUDA, "%s: %s", op, name) }

// Internal reports a broken invariant.
func Internal(format string, args ...any) error { return errorf(StatusInternal, format, args...) }

// StatusOf maps any error to its status (StatusInternal for foreign errors).
func StatusOf(err error) Status {
	if err == nil {
		return StatusOK
	}
	if e, ok := err.(*Error); ok {
		return e.Status
	}
	return StatusInternal
}

// Tensor describes memory the caller owns: Data is a host address (CPU) or a device address.
// Data == 0 marks an absent optional tensor.
type Tensor struct {
	Data    uintptr
	DType   DType
	Shape   []int64
	Strides []int64 // in elements
}

// Present reports whether the optional tensor was given.
func (t Tensor) Present() bool { return t.Data != 0 }

// Contiguous builds the row-major strides for shape.
func Contiguous(shape ...int64) []int64 {
	s := make([]int64, len(shape))
	acc := int64(1)
	for i := len(shape) - 1; i >= 0; i-- {
		s[i] = acc
		acc *= shape[i]
	}
	return s
}

// ScanArgs is one forward scan call. Device < 0 means host memory and the CPU backend.
type ScanArgs struct {
	A, X, Out    Tensor // (B,T,R), (B,T,R,C), (B,T,R,C)
	InitialState Tensor // optional (B,R,C) float32 (float64 with float64 x on the CPU)
	FinalState   Tensor // optional (B,R,C), written with the state after the last step
	CuSeqlens    Tensor // optional (N+1,) int32/int64: packed sequences
	// MaxSeqlen: with CuSeqlens, the longest sequence's length if the caller knows it, else 0.
	// A hint for the plan only (any value gives equally accurate results; the bits may differ,
	// as the plan does): a pack whose one long sequence dominates then takes the plan that splits
	// that sequence (core/plan.go layout).
	MaxSeqlen    int64
	Reverse      bool
	Workspace    uintptr // device scratch, WorkspaceSize bytes; may be 0 when that is 0
	WorkspaceLen int64
	Device       int     // CUDA device ordinal, or -1 for host memory
	Stream       uintptr // CUstream of the caller (0 = the legacy default stream)
}

// CPU is the Device value for host memory.
const CPU = -1

// BackwardArgs is one backward call: the gradients of a forward scan (ScanArgs with the same
// A, x, out, cu_seqlens and direction) given dL/dout and, optionally, dL/d(final state).
type BackwardArgs struct {
	A, X, Out        Tensor // the forward's A (B,T,R), x and out (B,T,R,C)
	GradOut          Tensor // dL/dout (B,T,R,C), dtype of x
	GradX            Tensor // output dL/dx (B,T,R,C), dtype of x; may be GradOut itself (same layout)
	GradA            Tensor // output dL/dA (B,T,R), dtype of A
	InitialState     Tensor // the forward's initial state, if any (packed sequences need it for dA)
	GradFinalState   Tensor // optional dL/d(final state) (S,R,C), state dtype
	GradInitialState Tensor // optional output dL/d(initial state) (S,R,C), state dtype
	CuSeqlens        Tensor // optional (N+1,) packed sequences, as in the forward
	MaxSeqlen        int64  // optional hint, as ScanArgs.MaxSeqlen
	Reverse          bool   // the forward ran in reverse
	Workspace        uintptr
	WorkspaceLen     int64
	Device           int
	Stream           uintptr
}

// ReverseScan is the scan the backward runs: grad_out scanned in the opposite direction into
// grad_x, the final state's gradient entering as its (undecayed) initial state and dh0 leaving
// as its (scaled) final state.
func (a *BackwardArgs) ReverseScan() ScanArgs {
	return ScanArgs{A: a.A, X: a.GradOut, Out: a.GradX, InitialState: a.GradFinalState,
		FinalState: a.GradInitialState, CuSeqlens: a.CuSeqlens, MaxSeqlen: a.MaxSeqlen, Reverse: !a.Reverse,
		Workspace: a.Workspace, WorkspaceLen: a.WorkspaceLen, Device: a.Device, Stream: a.Stream}
}
