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
//	out[t] = exp(A[t] - A[t-1]) * out[t-1] + x[t]      (A[-1] := 0, out[-1] := h0 or 0)
//
// one (b, r) row of C channels at a time, rows spread over goroutines, each step a BLAS copy
// and axpy over the C channels (gonum). float32 accumulates in float32 like the GPU; float64
// in float64 (the gradcheck path).
type cpuBackend struct{}

func (cpuBackend) Name() string { return "cpu" }

func (cpuBackend) WorkspaceSize(*ScanArgs, Problem) (int64, error) { return 0, nil }

func (cpuBackend) Scan(a *ScanArgs, p Problem) error {
	switch p.DType {
	case Float32:
		return scanHost(a, p, blasOps[float32]{gonum.Implementation{}.Scopy, gonum.Implementation{}.Saxpy})
	case Float64:
		return scanHost(a, p, blasOps[float64]{gonum.Implementation{}.Dcopy, gonum.Implementation{}.Daxpy})
	}
	return Unsupported("x: the CPU backend takes float32 or float64, got %v", p.DType)
}

type float interface{ float32 | float64 }

type blasOps[F float] struct {
	copy func(n int, x []F, incX int, y []F, incY int)
	axpy func(n int, alpha F, x []F, incX int, y []F, incY int)
}

// hostView is a strided view of caller-owned host memory as a Go slice (never retained).
func hostView[F float](t Tensor) []F {
	off, _ := maxOffset(t)
	return unsafe.Slice((*F)(unsafe.Pointer(t.Data)), off+1)
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

func scanHost[F float](a *ScanArgs, p Problem, ops blasOps[F]) error {
	x, out := hostView[F](a.X), hostView[F](a.Out)
	av := readA(a.A)
	var h0, hT []F
	if p.HasInitial {
		h0 = hostView[F](a.InitialState)
	}
	if p.HasFinal {
		hT = hostView[F](a.FinalState)
	}
	xs, os, as := a.X.Strides, a.Out.Strides, a.A.Strides
	n := int(p.C)
	incX, incO := int(xs[3]), int(os[3])
	if n == 1 {
		incX, incO = 1, 1
	}
	row := func(b, r int64) {
		abase := b*as[0] + r*as[2]
		prev := int64(-1) // offset of out[t-1] (scan order), -1 before the first step
		aPrev := 0.0      // A[-1] := 0
		for step := int64(0); step < p.T; step++ {
			t := step
			if p.Reverse {
				t = p.T - 1 - step
			}
			xo, oo := b*xs[0]+t*xs[1]+r*xs[2], b*os[0]+t*os[1]+r*os[2]
			at := av(abase + t*as[1])
			if p.Reverse {
				at = -at
			}
			if incX == 0 { // x broadcast over C: BLAS rejects a zero increment
				for c := 0; c < n; c++ {
					out[oo+int64(c*incO)] = x[xo]
				}
			} else {
				ops.copy(n, x[xo:], incX, out[oo:], incO)
			}
			switch {
			case prev >= 0:
				ops.axpy(n, F(math.Exp(at-aPrev)), out[prev:], incO, out[oo:], incO)
			case h0 != nil:
				ops.axpy(n, F(math.Exp(at)), h0[(b*p.R+r)*p.C:], 1, out[oo:], incO)
			}
			prev, aPrev = oo, at
		}
		if hT != nil {
			ops.copy(n, out[prev:], incO, hT[(b*p.R+r)*p.C:], 1)
		}
	}
	parallelRows(p.B*p.R, func(i int64) { row(i/p.R, i%p.R) })
	runtime.KeepAlive(a)
	return nil
}

// parallelRows runs f over [0, n) on GOMAXPROCS goroutines, in contiguous blocks.
func parallelRows(n int64, f func(i int64)) {
	workers := int64(runtime.GOMAXPROCS(0))
	if workers > n {
		workers = n
	}
	if workers <= 1 {
		for i := int64(0); i < n; i++ {
			f(i)
		}
		return
	}
	var wg sync.WaitGroup
	per := (n + workers - 1) / workers
	for w := int64(0); w < workers; w++ {
		lo, hi := w*per, min((w+1)*per, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				f(i)
			}
		}()
	}
	wg.Wait()
}
