package core

import (
	"math"
	"runtime"
	"sync"
	"unsafe"

	"gonum.org/v1/gonum/blas/gonum"
)

// The CPU backend: the same recurrence as kernels/scan.cu,
//
//	h[t] = exp(A[t] - A[t-1]) * h[t-1] + x[t],   out[t] = h[t]   (A[-1] := 0, h[-1] := h0 or 0)
//
// one (b, r) row of C channels at a time, rows spread over goroutines. The state is kept in
// float64 for every dtype (the GPU keeps a float32 state but multiplies it by one decay per
// 128-step block; a float32 state multiplied once per step loses 2.7e-5 at T = 65536 with decays
// near 1), scaled each step by gonum's BLAS; out is rounded to the I/O dtype.
type cpuBackend struct{}

func (cpuBackend) Name() string { return "cpu" }

func (cpuBackend) WorkspaceSize(*ScanArgs, Problem) (int64, error) { return 0, nil }

func (cpuBackend) Scan(a *ScanArgs, p Problem) error {
	return byHostFloat("x", p.DType, func() error { return scanHost[float32](a, p) },
		func() error { return scanHost[float64](a, p) })
}

type float interface{ float32 | float64 }

// byHostFloat runs the float32 or the float64 instance of a CPU kernel by the I/O dtype (named
// by arg in the error): the CPU backend's two dtypes.
func byHostFloat(arg string, dt DType, f32, f64 func() error) error {
	switch dt {
	case Float32:
		return f32()
	case Float64:
		return f64()
	}
	return Unsupported("%s: the CPU backend takes float32 or float64, got %v", arg, dt)
}

// loadState sets h to row base of the state tensor s (C values), or to 0 where s is absent.
func loadState[F float](h []float64, s []F, base int64) {
	for c := range h {
		h[c] = 0
		if s != nil {
			h[c] = float64(s[base+int64(c)])
		}
	}
}

// hostView is a strided view of caller-owned host memory as a Go slice (never retained).
func hostView[F float](t Tensor) []F {
	off, _ := maxOffset(t)
	return unsafe.Slice((*F)(unsafe.Pointer(t.Data)), off+1)
}

// optionalView is hostView of an optional tensor, nil when it is absent.
func optionalView[F float](t Tensor) []F {
	if !t.Present() {
		return nil
	}
	return hostView[F](t)
}

// readA returns A's elements as float64 whatever its dtype (float32 or float64).
func readA(t Tensor) func(i int64) float64 {
	if t.DType == Float64 {
		s := hostView[float64](t)
		return func(i int64) float64 { return s[i] }
	}
	s := hostView[float32](t)
	return func(i int64) float64 { return float64(s[i]) }
}

func scanHost[F float](a *ScanArgs, p Problem) error {
	x, out := hostView[F](a.X), hostView[F](a.Out)
	av := readA(a.A)
	h0, hT := optionalView[F](a.InitialState), optionalView[F](a.FinalState)
	xs, os, as := a.X.Strides, a.Out.Strides, a.A.Strides
	n := int(p.C)
	blas := gonum.Implementation{}
	var cu []int64 // packed sequences: sequence k is [cu[k], cu[k+1]) with state row k
	if a.CuSeqlens.Present() {
		cu = seqlens(a.CuSeqlens)
	}
	row := func(b, r int64, h []float64) {
		abase := b*as[0] + r*as[2]
		a := func(t int64) float64 { // A in scan order: negated for reverse
			if p.Reverse {
				return -av(abase + t*as[1])
			}
			return av(abase + t*as[1])
		}
		// one sequence [s, e) whose states are row k of h0 / hT
		run := func(s, e, k int64) {
			base := (k*p.R + r) * p.C
			loadState(h, h0, base)
			aPrev := 0.0 // A[s-1], with A[-1] := 0: the decay of h0 into step s (forward only)
			if !p.Reverse && s > 0 {
				aPrev = a(s - 1)
			}
			for step := int64(0); step < e-s; step++ {
				t := s + step
				if p.Reverse {
					t = e - 1 - step
				}
				at := a(t)
				if step > 0 || h0 != nil { // a zero state needs no decay (and avoids 0 * inf)
					blas.Dscal(n, math.Exp(at-aPrev), h, 1)
				}
				aPrev = at
				xo, oo := b*xs[0]+t*xs[1]+r*xs[2], b*os[0]+t*os[1]+r*os[2]
				for c := int64(0); c < p.C; c++ {
					h[c] += float64(x[xo+c*xs[3]])
					out[oo+c*os[3]] = F(h[c])
				}
			}
			if hT != nil {
				for c := range h {
					hT[base+int64(c)] = F(h[c])
				}
			}
		}
		eachSequence(cu, p.T, b, run)
	}
	parallelRows(p.B*p.R, n, func(i int64, h []float64) { row(i/p.R, i%p.R, h) })
	runtime.KeepAlive(a)
	return nil
}

// eachSequence calls run(s, e, k) for every sequence [s, e) of a row and its state row k: the
// packed sequences of cu (B = 1), or the whole row of batch b.
func eachSequence(cu []int64, T, b int64, run func(s, e, k int64)) {
	if cu == nil {
		run(0, T, b)
		return
	}
	for k := 0; k+1 < len(cu); k++ {
		run(cu[k], cu[k+1], int64(k))
	}
}

// parallelRows runs f over the rows [0, rows) on up to GOMAXPROCS goroutines, in contiguous
// blocks, each goroutine with its own state vector of c float64s. Small problems stay on the
// calling goroutine: starting goroutines costs more than scanning a few thousand elements.
func parallelRows(rows int64, c int, f func(i int64, h []float64)) {
	workers := int64(runtime.GOMAXPROCS(0))
	if workers > rows || rows*int64(c) < 1<<14 {
		workers = 1
	}
	per := (rows + workers - 1) / workers
	var wg sync.WaitGroup
	for w := int64(0); w < workers; w++ {
		lo, hi := w*per, min((w+1)*per, rows)
		work := func() {
			h := make([]float64, c)
			for i := lo; i < hi; i++ {
				f(i, h)
			}
		}
		if workers == 1 {
			work()
			break
		}
		wg.Add(1)
		go func() { defer wg.Done(); work() }()
	}
	wg.Wait()
}
