package core

import (
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"unsafe"
)

// gradCase is one forward configuration whose gradients are checked.
type gradCase struct {
	name    string
	B, T    int64
	cu      []int64 // packed sequences (B = 1), or nil
	reverse bool
	h0      bool
}

func addr(s []float64) uintptr {
	if len(s) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&s[0]))
}

// TestBackwardMatchesFiniteDifferences: the CPU backward's dx, dA and dh0 equal central
// differences of L = sum(out * g) + sum(final * gT) through the forward, in float64, for plain,
// reverse, initial-state and packed scans (empty sequences included).
func TestBackwardMatchesFiniteDifferences(t *testing.T) {
	const R, C = 2, 3
	cases := []gradCase{
		{"plain", 2, 7, nil, false, false},
		{"T=1", 1, 1, nil, false, true},
		{"reverse", 2, 6, nil, true, false},
		{"initial state", 2, 5, nil, false, true},
		{"packed with h0", 1, 9, []int64{0, 0, 3, 4, 4, 9}, false, true},
		{"packed reverse", 1, 8, []int64{0, 2, 2, 7, 8}, true, false},
		{"packed empty at ends", 1, 5, []int64{0, 0, 5, 5}, false, true},
	}
	for i, c := range cases {
		rng := rand.New(rand.NewPCG(uint64(i), 9))
		A, x := randomInputs(rng, int(c.B), int(c.T), R, C)
		S := c.B
		if c.cu != nil {
			S = int64(len(c.cu) - 1)
		}
		randn := func(n int64) []float64 {
			v := make([]float64, n)
			for j := range v {
				v[j] = rng.NormFloat64()
			}
			return v
		}
		g, gT := randn(int64(len(x))), randn(S*R*C)
		var h0 []float64
		if c.h0 {
			h0 = randn(S * R * C)
		}
		shapeX, shapeA, shapeS := []int64{c.B, c.T, R, C}, []int64{c.B, c.T, R}, []int64{S, R, C}
		ten := func(s []float64, shape []int64) Tensor {
			if s == nil {
				return Tensor{}
			}
			return Tensor{addr(s), Float64, shape, Contiguous(shape...)}
		}
		var cuT Tensor
		if c.cu != nil {
			cuT = Tensor{uintptr(unsafe.Pointer(&c.cu[0])), Int64, []int64{S + 1}, []int64{1}}
		}
		forward := func() (out, fin []float64) {
			out, fin = make([]float64, len(x)), make([]float64, S*R*C)
			a := ScanArgs{A: ten(A, shapeA), X: ten(x, shapeX), Out: ten(out, shapeX), InitialState: ten(h0, shapeS),
				FinalState: ten(fin, shapeS), CuSeqlens: cuT, Reverse: c.reverse, Device: CPU}
			if err := Scan(&a); err != nil {
				t.Fatalf("%s: forward: %v", c.name, err)
			}
			return out, fin
		}
		loss := func() float64 {
			out, fin := forward()
			l := 0.0
			for j := range out {
				l += out[j] * g[j]
			}
			for j := range fin {
				l += fin[j] * gT[j]
			}
			return l
		}
		out, _ := forward()
		dx, dA := make([]float64, len(x)), make([]float64, len(A))
		var dh0 []float64
		if c.h0 {
			dh0 = make([]float64, len(h0))
		}
		for j := range dx {
			dx[j] = math.NaN() // poison: every element must be written
		}
		for j := range dA {
			dA[j] = math.NaN()
		}
		ba := BackwardArgs{A: ten(A, shapeA), X: ten(x, shapeX), Out: ten(out, shapeX), GradOut: ten(g, shapeX),
			GradX: ten(dx, shapeX), GradA: ten(dA, shapeA), InitialState: ten(h0, shapeS),
			GradFinalState: ten(gT, shapeS), GradInitialState: ten(dh0, shapeS), CuSeqlens: cuT,
			Reverse: c.reverse, Device: CPU}
		if err := ScanBackward(&ba); err != nil {
			t.Fatalf("%s: backward: %v", c.name, err)
		}
		check := func(what string, param, grad []float64) {
			for j := range param {
				const eps = 1e-6
				keep := param[j]
				param[j] = keep + eps
				lp := loss()
				param[j] = keep - eps
				lm := loss()
				param[j] = keep
				want := (lp - lm) / (2 * eps)
				if d := math.Abs(grad[j] - want); !(d <= 1e-6*(1+math.Abs(want))) {
					t.Fatalf("%s: d%s[%d] = %g, finite differences give %g", c.name, what, j, grad[j], want)
				}
			}
		}
		check("x", x, dx)
		check("A", A, dA)
		if c.h0 {
			check("h0", h0, dh0)
		}
	}
}

// TestBackwardErrors: the backward names its own arguments.
func TestBackwardErrors(t *testing.T) {
	buf := make([]float64, 4096)
	base := addr(buf)
	x := func(off int) Tensor {
		return Tensor{base + uintptr(off*8), Float64, []int64{1, 4, 2, 3}, Contiguous(1, 4, 2, 3)}
	}
	good := func() BackwardArgs {
		return BackwardArgs{A: Tensor{base, Float64, []int64{1, 4, 2}, Contiguous(1, 4, 2)}, X: x(100), Out: x(200),
			GradOut: x(300), GradX: x(400), GradA: Tensor{base + 8*500, Float64, []int64{1, 4, 2}, Contiguous(1, 4, 2)}, Device: CPU}
	}
	for _, c := range []struct {
		mutate func(*BackwardArgs)
		msg    string
	}{
		{func(a *BackwardArgs) { a.GradOut.Shape = []int64{1, 4, 2} }, "grad_out: expected 4 dims (B,T,R,C), got 3"},
		{func(a *BackwardArgs) { a.GradX = x(100) }, "grad_x: overlaps x"},
		{func(a *BackwardArgs) { a.Out.Shape = []int64{1, 4, 2, 2} }, "out: expected float64 (1,4,2,3) like grad_out"},
		{func(a *BackwardArgs) { a.GradA.DType = Float32 }, "grad_A: expected float64 (1,4,2) like A, got float32"},
		{func(a *BackwardArgs) { a.GradA.Data = base + 8*300 }, "grad_A: overlaps grad_out"},
		{func(a *BackwardArgs) {
			a.Reverse = true
			a.GradInitialState = Tensor{base + 8*600, Float64, []int64{1, 2, 3}, Contiguous(1, 2, 3)}
		}, "grad_initial_state: not defined for reverse scans"},
		{func(a *BackwardArgs) {
			a.GradFinalState = Tensor{base + 8*600, Float64, []int64{2, 2, 3}, Contiguous(2, 2, 3)}
		},
			"grad_final_state: expected shape (1,2,3), got (2,2,3)"},
	} {
		a := good()
		c.mutate(&a)
		if err := ScanBackward(&a); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("got %v, want %q", err, c.msg)
		}
	}
	a := good()
	if err := ScanBackward(&a); err != nil {
		t.Fatalf("the good call is refused: %v", err)
	}
}

// workersSeqlens is package-level so that its address is stable (a local slice may live on a
// goroutine stack, which moves when it grows: a uintptr to it would go stale).
var workersSeqlens = []int64{0, 7, 7, 19, 30}

// The CPU backend's results do not depend on how rows are split over goroutines and segments:
// forward and backward (packed, with states, C = 300 so several segments per b) give the same
// bits on 1 and on 3 goroutines.
func TestCPUResultsIndependentOfWorkers(t *testing.T) {
	const B, T, R, C, S = 1, 30, 70, 300, 4
	rng := rand.New(rand.NewPCG(5, 5))
	A, x := randomInputs(rng, B, T, R, C)
	randn := func(n int) []float64 {
		v := make([]float64, n)
		for j := range v {
			v[j] = rng.NormFloat64()
		}
		return v
	}
	g, gT, h0 := randn(len(x)), randn(S*R*C), randn(S*R*C)
	cu := workersSeqlens
	t4 := func(s []float64) Tensor { return Tensor{addr(s), Float64, []int64{B, T, R, C}, Contiguous(B, T, R, C)} }
	t3 := func(s []float64) Tensor { return Tensor{addr(s), Float64, []int64{B, T, R}, Contiguous(B, T, R)} }
	ts := func(s []float64) Tensor { return Tensor{addr(s), Float64, []int64{S, R, C}, Contiguous(S, R, C)} }
	seq := Tensor{uintptr(unsafe.Pointer(&cu[0])), Int64, []int64{S + 1}, []int64{1}}
	run := func(procs int) [][]float64 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		out, fin, dx, dA, dh0 := make([]float64, len(x)), make([]float64, S*R*C), make([]float64, len(x)),
			make([]float64, len(A)), make([]float64, S*R*C)
		if err := Scan(&ScanArgs{A: t3(A), X: t4(x), Out: t4(out), InitialState: ts(h0), FinalState: ts(fin),
			CuSeqlens: seq, Device: CPU}); err != nil {
			t.Fatal(err)
		}
		if err := ScanBackward(&BackwardArgs{A: t3(A), X: t4(x), Out: t4(out), GradOut: t4(g), GradX: t4(dx),
			GradA: t3(dA), InitialState: ts(h0), GradFinalState: ts(gT), GradInitialState: ts(dh0),
			CuSeqlens: seq, Device: CPU}); err != nil {
			t.Fatal(err)
		}
		return [][]float64{out, fin, dx, dA, dh0}
	}
	one, three := run(1), run(3)
	for i, name := range []string{"out", "final state", "dx", "dA", "dh0"} {
		for j := range one[i] {
			if math.Float64bits(one[i][j]) != math.Float64bits(three[i][j]) {
				t.Fatalf("%s[%d]: %v on one goroutine, %v on three", name, j, one[i][j], three[i][j])
			}
		}
	}
}
