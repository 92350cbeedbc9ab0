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
// near 1); out is rounded to the I/O dtype. Long float64 rows step through gonum's BLAS.
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
	unit := xs[3] == 1 && os[3] == 1
	// float64 rows of unit stride and C >= blasMinC step through gonum's BLAS (SIMD Dscal and
	// Daxpy): measured 1.6x (C = 64) to 2.2x (C = 512) faster than scanStep's scalar loop here,
	// slower below C = 64 (the calls' overhead). The same roundings: h*d, then + x.
	var x64, out64 []float64
	if unit && p.DType == Float64 && p.C >= blasMinC {
		x64, out64 = hostView[float64](a.X), hostView[float64](a.Out)
	}
	blas := gonum.Implementation{}
	var cu []int64 // packed sequences: sequence k is [cu[k], cu[k+1]) with state row k
	if a.CuSeqlens.Present() {
		cu = seqlens(a.CuSeqlens)
	}
	// A in scan order (negated for reverse)
	aAt := func(b, r, t int64) float64 {
		v := av(b*as[0] + t*as[1] + r*as[2])
		if p.Reverse {
			return -v
		}
		return v
	}
	parallelSegments(p.B, p.R, p.C, func(b, r0, r1 int64, h, aPrev []float64) {
		row := func(r int64) []float64 { return h[(r-r0)*p.C : (r-r0+1)*p.C] }
		// one sequence [s, e) whose states are row k of h0 / hT
		eachSequence(cu, p.T, b, func(s, e, k int64) {
			for r := r0; r < r1; r++ {
				loadState(row(r), h0, (k*p.R+r)*p.C)
				aPrev[r-r0] = 0 // A[s-1], with A[-1] := 0: the decay of h0 into step s (forward only)
				if !p.Reverse && s > 0 {
					aPrev[r-r0] = aAt(b, r, s-1)
				}
			}
			for step := int64(0); step < e-s; step++ {
				t := s + step
				if p.Reverse {
					t = e - 1 - step
				}
				for r := r0; r < r1; r++ {
					at, hr := aAt(b, r, t), row(r)
					d := 1.0 // a zero state needs no decay (and 1 avoids 0 * inf)
					if step > 0 || h0 != nil {
						d = math.Exp(at - aPrev[r-r0])
					}
					aPrev[r-r0] = at
					xo, oo := b*xs[0]+t*xs[1]+r*xs[2], b*os[0]+t*os[1]+r*os[2]
					if x64 != nil {
						blas.Dscal(int(p.C), d, hr, 1)
						blas.Daxpy(int(p.C), 1, x64[xo:xo+p.C], 1, hr, 1)
						copy(out64[oo:oo+p.C], hr)
						continue
					}
					if unit {
						scanStep(hr, x[xo:xo+p.C], out[oo:oo+p.C], d)
						continue
					}
					for c := int64(0); c < p.C; c++ {
						v := float64(hr[c]*d) + float64(x[xo+c*xs[3]])
						hr[c], out[oo+c*os[3]] = v, F(v)
					}
				}
			}
			if hT != nil {
				for r := r0; r < r1; r++ {
					for c, v := range row(r) {
						hT[(k*p.R+r)*p.C+int64(c)] = F(v)
					}
				}
			}
		})
	})
	runtime.KeepAlive(a)
	return nil
}

// scanStep is one step of a row of unit-stride channels: h = d*h + x, out = h (rounded to F).
// float64(h*d) keeps the product rounded on its own, as two BLAS calls would: no fused
// multiply-add on any architecture, so results do not depend on the machine.
func scanStep[F float](h []float64, x, out []F, d float64) {
	h, out = h[:len(x)], out[:len(x)]
	for c, xv := range x {
		v := float64(h[c]*d) + float64(xv)
		h[c], out[c] = v, F(v)
	}
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

// parallelSegments runs f over the B x R rows (b, r) on up to GOMAXPROCS goroutines, each
// taking a contiguous block of rows, cut into segments: rows r0 .. r1-1 of one b, at most
// segmentElems states. A segment steps its rows together (t outer, r inner), so each step reads
// one contiguous stretch of the (B,T,R,C) layout: one row at a time would jump R*C elements per
// step, a new page every step for the prefetchers (measured: 2.6x slower on 4,2048,16,64).
// f gets the segment's state (rows x C float64s) and one more float64 per row. Small problems
// stay on the calling goroutine: starting goroutines costs more than scanning a few thousand
// elements.
func parallelSegments(B, R, C int64, f func(b, r0, r1 int64, h, aux []float64)) {
	rows := B * R
	workers := int64(runtime.GOMAXPROCS(0))
	if workers > rows || rows*C < 1<<14 {
		workers = 1
	}
	segRows := max(1, min(R, segmentElems/C))
	per := (rows + workers - 1) / workers
	var wg sync.WaitGroup
	for w := int64(0); w < workers; w++ {
		lo, hi := w*per, min((w+1)*per, rows)
		work := func() {
			h, aux := make([]float64, segRows*C), make([]float64, segRows)
			for i := lo; i < hi; {
				b, r0 := i/R, i%R
				r1 := min(R, r0+segRows, r0+hi-i)
				f(b, r0, r1, h, aux)
				i += r1 - r0
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

// blasMinC is the smallest C whose float64 rows step through BLAS (see scanHost).
const blasMinC = 64

// segmentElems bounds a segment's state: 8192 float64s (64 KB) stay in L2 and give steps of
// 8192 contiguous elements.
const segmentElems = 8192
