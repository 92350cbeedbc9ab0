package core

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
	"unsafe"
)

// Problem is a validated scan: sizes and what the call asks for.
type Problem struct {
	B, T, R, C int64
	DType      DType // of x and out
	ADType     DType // of A (float32, or float64 with float64 x on the CPU)
	Reverse    bool
	HasInitial bool
	HasFinal   bool
	Seqs       int64 // packed sequences (cu_seqlens given), else 0
	MaxLen     int64 // the longest packed sequence's steps where known (max_seqlen, or host values), else 0
	States     int64 // rows of initial/final state: Seqs when packed, else B
}

// hasStates: the call has an initial or a final state (in the backward: a final state's gradient
// in or an initial state's out). A packed call with neither takes the lean packed kernels
// (core/plan.go layout); one with either, the packed kernels with their code.
func (p Problem) hasStates() bool { return p.HasInitial || p.HasFinal }

// checkSeqlens validates packed sequences: B = 1, cu_seqlens (N+1,) int32/int64 with
// cu_seqlens[0] = 0, cu_seqlens[N] = T, non-decreasing. Values are checked in host memory only.
func checkSeqlens(a *ScanArgs, p *Problem) error {
	t := a.CuSeqlens
	if err := checkTensor("cu_seqlens", t, "(N+1)"); err != nil {
		return err
	}
	if t.DType != Int32 && t.DType != Int64 {
		return Invalid("cu_seqlens", "expected int32 or int64, got %v", t.DType)
	}
	if p.B != 1 {
		return Invalid("cu_seqlens", "packed sequences need B = 1, got B = %d", p.B)
	}
	p.Seqs, p.States = t.Shape[0]-1, t.Shape[0]-1
	p.MaxLen = min(a.MaxSeqlen, p.T)
	if a.Device != CPU {
		// device memory: reading the values would synchronise the host. The kernels only compare
		// them, so malformed offsets give wrong results, never out-of-bounds accesses.
		return nil
	}
	cu := seqlens(t)
	if cu[0] != 0 || cu[len(cu)-1] != p.T {
		return Invalid("cu_seqlens", "must start at 0 and end at T = %d, got %d and %d", p.T, cu[0], cu[len(cu)-1])
	}
	p.MaxLen = 0 // (the values say it exactly)
	for k := 1; k < len(cu); k++ {
		if cu[k] < cu[k-1] {
			return Invalid("cu_seqlens", "must be non-decreasing, got %d after %d at index %d", cu[k], cu[k-1], k)
		}
		p.MaxLen = max(p.MaxLen, cu[k]-cu[k-1])
	}
	return nil
}

// seqlens reads host cu_seqlens as int64s.
func seqlens(t Tensor) []int64 {
	out := make([]int64, t.Shape[0])
	for i := range out {
		off := int64(i) * t.Strides[0]
		if t.DType == Int32 {
			out[i] = int64(*(*int32)(unsafe.Add(unsafe.Pointer(t.Data), off*4)))
		} else {
			out[i] = *(*int64)(unsafe.Add(unsafe.Pointer(t.Data), off*8))
		}
	}
	return out
}

func shapeString(s []int64) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmt.Sprint(v)
	}
	return "(" + strings.Join(parts, ",") + ")"
}

// checkTensor checks rank, sizes >= 1, strides >= 0, the pointer and its alignment, and that
// the addressed span fits in int64.
func checkTensor(arg string, t Tensor, dims string) error {
	want := strings.Count(dims, ",") + 1
	if len(t.Shape) != want {
		return Invalid(arg, "expected %d dims %s, got %d", want, dims, len(t.Shape))
	}
	if len(t.Strides) != len(t.Shape) {
		return Invalid(arg, "expected %d strides, got %d", len(t.Shape), len(t.Strides))
	}
	if t.Data == 0 {
		return Invalid(arg, "data pointer is NULL")
	}
	size := t.DType.Size()
	if size == 0 {
		return Invalid(arg, "unknown dtype %d", int32(t.DType))
	}
	if t.Data%uintptr(size) != 0 {
		return Invalid(arg, "data pointer %#x is not aligned to its %d-byte elements", t.Data, size)
	}
	name := func(i int) string { return strings.Split(strings.Trim(dims, "()"), ",")[i] }
	count := int64(1)
	for i, n := range t.Shape {
		if n < 1 {
			return Invalid(arg, "size of dim %s must be >= 1, got %d", name(i), n)
		}
		if t.Strides[i] < 0 {
			return Invalid(arg, "stride of dim %s must be >= 0, got %d", name(i), t.Strides[i])
		}
		if count > math.MaxInt64/n {
			return Invalid(arg, "shape %s has more than 2^63 elements", shapeString(t.Shape))
		}
		count *= n
	}
	if _, ok := maxOffset(t); !ok {
		return Invalid(arg, "shape %s with strides %s addresses past 2^63 bytes", shapeString(t.Shape), shapeString(t.Strides))
	}
	return nil
}

// maxOffset is the largest element offset the tensor addresses; ok is false when its last byte
// would lie past 2^63. Sizes >= 1 and strides >= 0 (checkTensor checks them first). Multiplies
// with overflow detection instead of a division per dim: every call runs this several times.
func maxOffset(t Tensor) (int64, bool) {
	limit := uint64(math.MaxInt64 / t.DType.Size())
	var off uint64
	for i, n := range t.Shape {
		hi, lo := bits.Mul64(uint64(n-1), uint64(t.Strides[i]))
		if hi != 0 || lo > limit-off {
			return 0, false
		}
		off += lo
	}
	return int64(off), true
}

// span is the byte range [lo, hi) a tensor touches.
func span(t Tensor) (lo, hi uintptr) {
	off, _ := maxOffset(t)
	return t.Data, t.Data + uintptr((off+1)*t.DType.Size())
}

// overlapping reports whether two index tuples of t can address the same element: with the
// dims of size > 1 ordered by stride, each stride must exceed the largest offset the dims of
// smaller stride reach. (At most 4 dims: an insertion sort on the stack, no allocation, since
// every call runs this on its output.)
func overlapping(t Tensor) bool {
	type dim struct{ size, stride int64 }
	var buf [MaxDims]dim
	ds := buf[:0]
	for i, n := range t.Shape {
		if n > 1 {
			d := dim{n, t.Strides[i]}
			j := len(ds)
			ds = append(ds, d)
			for ; j > 0 && ds[j-1].stride > d.stride; j-- {
				ds[j] = ds[j-1]
			}
			ds[j] = d
		}
	}
	reach := int64(0) // largest offset reachable by the smaller-stride dims
	for _, d := range ds {
		if d.stride <= reach {
			return true
		}
		reach += d.stride * (d.size - 1)
	}
	return false
}

func sameLayout(a, b Tensor) bool {
	if a.Data != b.Data || a.DType != b.DType || len(a.Shape) != len(b.Shape) {
		return false
	}
	for i := range a.Shape {
		if a.Shape[i] != b.Shape[i] || (a.Shape[i] > 1 && a.Strides[i] != b.Strides[i]) {
			return false
		}
	}
	return true
}

func disjoint(a, b Tensor) bool {
	alo, ahi := span(a)
	blo, bhi := span(b)
	return ahi <= blo || bhi <= alo
}

// roles names the tensors of a scan in error messages: a backward call validates its reverse
// scan of grad_out into grad_x under its own argument names.
type roles struct{ x, out, h0, hT string }

var forwardRoles = roles{"x", "out", "initial_state", "final_state"}

// checkState checks an initial/final state (or its gradient): (States,R,C) contiguous, in the
// state dtype (float32; float64 with float64 x on the CPU).
func checkState(name string, t Tensor, p Problem) error {
	stateType := Float32
	if p.DType == Float64 {
		stateType = Float64
	}
	if err := checkTensor(name, t, "(B,R,C)"); err != nil {
		return err
	}
	if t.DType != stateType {
		return Invalid(name, "expected %v, got %v", stateType, t.DType)
	}
	if t.Shape[0] != p.States || t.Shape[1] != p.R || t.Shape[2] != p.C {
		return Invalid(name, "expected shape (%d,%d,%d), got %s", p.States, p.R, p.C, shapeString(t.Shape))
	}
	if t.Strides[2] != 1 || t.Strides[1] != p.C || t.Strides[0] != p.R*p.C {
		return Invalid(name, "expected contiguous strides %s, got %s",
			shapeString(Contiguous(p.States, p.R, p.C)), shapeString(t.Strides))
	}
	return nil
}

// checkOptionalState checks an optional state: whether it is present, and checkState if so.
func checkOptionalState(name string, t Tensor, p Problem) (bool, error) {
	if !t.Present() {
		return false, nil
	}
	return true, checkState(name, t, p)
}

// Validate checks a scan call and returns its problem, or an error naming the argument.
func Validate(a *ScanArgs) (Problem, error) { return validate(a, forwardRoles, false) }

func validate(a *ScanArgs, n roles, backward bool) (Problem, error) {
	if err := checkTensor("A", a.A, "(B,T,R)"); err != nil {
		return Problem{}, err
	}
	if err := checkTensor(n.x, a.X, "(B,T,R,C)"); err != nil {
		return Problem{}, err
	}
	p := Problem{B: a.X.Shape[0], T: a.X.Shape[1], R: a.X.Shape[2], C: a.X.Shape[3],
		DType: a.X.DType, ADType: a.A.DType, Reverse: a.Reverse}
	if a.A.Shape[0] != p.B || a.A.Shape[1] != p.T || a.A.Shape[2] != p.R {
		return p, Invalid("A", "shape %s does not match %s's (B,T,R) = (%d,%d,%d)",
			shapeString(a.A.Shape), n.x, p.B, p.T, p.R)
	}
	switch p.DType {
	case Float32, Float16, BFloat16:
		if p.ADType != Float32 {
			return p, Invalid("A", "expected float32, got %v", p.ADType)
		}
	case Float64:
		if a.Device != CPU {
			return p, Unsupported("%s: float64 is supported on the CPU only, got it on cuda:%d", n.x, a.Device)
		}
		if p.ADType != Float64 && p.ADType != Float32 {
			return p, Invalid("A", "expected float64 or float32 with float64 %s, got %v", n.x, p.ADType)
		}
	default:
		return p, Invalid(n.x, "expected float32, float16, bfloat16 or float64, got %v", p.DType)
	}
	if a.Device == CPU && (p.DType == Float16 || p.DType == BFloat16) {
		return p, Unsupported("%s: %v is supported on CUDA devices only; the CPU backend takes float32 or float64", n.x, p.DType)
	}
	if err := checkTensor(n.out, a.Out, "(B,T,R,C)"); err != nil {
		return p, err
	}
	if !slices.Equal(a.Out.Shape, a.X.Shape) || a.Out.DType != p.DType {
		return p, Invalid(n.out, "expected %v %s like %s, got %v %s", p.DType, shapeString(a.X.Shape), n.x,
			a.Out.DType, shapeString(a.Out.Shape))
	}
	if overlapping(a.Out) {
		return p, Invalid(n.out, "strides %s make elements overlap", shapeString(a.Out.Strides))
	}
	if !sameLayout(a.Out, a.X) && !disjoint(a.Out, a.X) {
		return p, Invalid(n.out, "overlaps %s without being %s itself (in place needs identical layout)", n.x, n.x)
	}
	// (A is read after the first outputs are written, by other blocks and, in the packed forward,
	// again after the look-back: a written tensor must not overlap it)
	if !disjoint(a.Out, a.A) {
		return p, Invalid(n.out, "overlaps A")
	}
	p.States = p.B
	if a.MaxSeqlen < 0 {
		return p, Invalid("max_seqlen", "expected >= 0 (0: unknown), got %d", a.MaxSeqlen)
	}
	if a.MaxSeqlen > 0 && !a.CuSeqlens.Present() {
		return p, Invalid("max_seqlen", "given (%d) without cu_seqlens", a.MaxSeqlen)
	}
	if a.CuSeqlens.Present() {
		if err := checkSeqlens(a, &p); err != nil {
			return p, err
		}
	}
	var err error
	if p.HasInitial, err = checkOptionalState(n.h0, a.InitialState, p); err != nil {
		return p, err
	}
	if p.HasFinal, err = checkOptionalState(n.hT, a.FinalState, p); err != nil {
		return p, err
	}
	if p.HasFinal && !(disjoint(a.FinalState, a.Out) && disjoint(a.FinalState, a.X) && disjoint(a.FinalState, a.A)) {
		return p, Invalid(n.hT, "overlaps A, %s or %s", n.x, n.out)
	}
	if p.HasInitial && p.Reverse && !backward {
		return p, Unsupported("initial_state: not defined for reverse scans")
	}
	if a.Device < CPU {
		return p, Invalid("device", "expected a CUDA ordinal >= 0 or -1 for the CPU, got %d", a.Device)
	}
	// The packed forward kernels with states (the forward's packed kernels when hasStates, as
	// layout picks them) hold a lane's offset in a state row in 32 bits (one register less,
	// kernels/scan_kernel.cuh): R*C elements of one step's state must fit.
	if a.Device != CPU && !backward && a.CuSeqlens.Present() && p.hasStates() && p.R*p.C > math.MaxInt32 {
		return p, Unsupported("%s: R*C = %d state elements per step; packed CUDA calls with states take at most 2^31-1",
			n.x, p.R*p.C)
	}
	return p, nil
}
