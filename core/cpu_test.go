package core

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"unsafe"

	"gonum.org/v1/gonum/floats"
)

// reference computes out[b,t,r,c] = exp(A[t]) h0 + sum_{j<=t} exp(A[t]-A[j]) x[j] (or the reverse
// sum) directly in float64: O(T^2), independent of the recurrence the backend uses.
func reference(A, x, h0 []float64, B, T, R, C int, reverse bool) []float64 {
	out := make([]float64, len(x))
	col := make([]float64, T)
	for b := 0; b < B; b++ {
		for r := 0; r < R; r++ {
			a := func(t int) float64 { return A[(b*T+t)*R+r] }
			for c := 0; c < C; c++ {
				xi := func(t int) int { return ((b*T+t)*R+r)*C + c }
				for t := 0; t < T; t++ {
					lo, hi := 0, t
					if reverse {
						lo, hi = t, T-1
					}
					for j := range col {
						col[j] = 0
					}
					for j := lo; j <= hi; j++ {
						e := a(t) - a(j) // A[later] - A[earlier]
						if reverse {
							e = -e
						}
						col[j] = math.Exp(e) * x[xi(j)]
					}
					out[xi(t)] = floats.Sum(col)
					if h0 != nil && !reverse {
						out[xi(t)] += math.Exp(a(t)) * h0[(b*R+r)*C+c]
					}
				}
			}
		}
	}
	return out
}

func randomInputs(rng *rand.Rand, B, T, R, C int) (A, x []float64) {
	A, x = make([]float64, B*T*R), make([]float64, B*T*R*C)
	for b := 0; b < B; b++ {
		for r := 0; r < R; r++ {
			acc := 0.0
			for t := 0; t < T; t++ {
				acc += -0.2 * rng.Float64() // log-decay in (-0.2, 0)
				A[(b*T+t)*R+r] = acc
			}
		}
	}
	for i := range x {
		x[i] = rng.NormFloat64()
	}
	return A, x
}

func relErr(got, want []float64) float64 {
	return floats.Distance(got, want, 2) / floats.Norm(want, 2)
}

func toF32(v []float64) []float32 {
	o := make([]float32, len(v))
	for i, f := range v {
		o[i] = float32(f)
	}
	return o
}

func toF64[F float](v []F) []float64 {
	o := make([]float64, len(v))
	for i, f := range v {
		o[i] = float64(f)
	}
	return o
}

// The last three: float64 rows through BLAS (C >= blasMinC); several goroutines with segments
// cut inside a b (R = 37 rows of C = 300: 27 rows per segment, and a worker's block ends mid-b).
var oddShapes = [][4]int{{1, 1, 1, 1}, {2, 3, 4, 7}, {1, 100, 2, 1}, {2, 37, 3, 5}, {3, 65, 2, 8},
	{2, 9, 5, 64}, {1, 40, 3, 128}, {3, 20, 37, 300}}

func TestCPUScanMatchesFloat64Reference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range oddShapes {
		B, T, R, C := s[0], s[1], s[2], s[3]
		for _, reverse := range []bool{false, true} {
			A, x := randomInputs(rng, B, T, R, C)
			var h0 []float64
			if !reverse {
				h0 = make([]float64, B*R*C)
				for i := range h0 {
					h0[i] = rng.NormFloat64()
				}
			}
			want := reference(A, x, h0, B, T, R, C, reverse)
			opt := Options{InitialState: h0, Reverse: reverse}

			out64, fin64, err := ScanSlices(A, x, int64(B), int64(T), int64(R), int64(C), opt)
			if err != nil {
				t.Fatalf("%v float64: %v", s, err)
			}
			if e := relErr(out64, want); !(e <= 1e-12) {
				t.Errorf("%v reverse=%v float64: rel err %.3g", s, reverse, e)
			}
			out32, fin32, err := ScanSlices(toF32(A), toF32(x), int64(B), int64(T), int64(R), int64(C), opt)
			if err != nil {
				t.Fatalf("%v float32: %v", s, err)
			}
			want32 := reference(toF64(toF32(A)), toF64(toF32(x)), h0, B, T, R, C, reverse)
			if e := relErr(toF64(out32), want32); !(e <= 1e-5) {
				t.Errorf("%v reverse=%v float32: rel err %.3g", s, reverse, e)
			}
			// the final state is the last step of the scan order
			last := T - 1
			if reverse {
				last = 0
			}
			for b := 0; b < B; b++ {
				for i := 0; i < R*C; i++ {
					w := want[(b*T+last)*R*C+i]
					if d := math.Abs(fin64[b*R*C+i] - w); d > 1e-9*(1+math.Abs(w)) {
						t.Fatalf("%v final state float64 off by %g", s, d)
					}
					if d := math.Abs(float64(fin32[b*R*C+i]) - w); d > 1e-4*(1+math.Abs(w)) {
						t.Fatalf("%v final state float32 off by %g", s, d)
					}
				}
			}
		}
	}
}

// TestCPUStridedAndInPlace reads a transposed, sliced x and scans in place.
func TestCPUStridedAndInPlace(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	B, T, R, C := 2, 29, 3, 6
	A, x := randomInputs(rng, B, T, R, C)
	want := reference(A, x, nil, B, T, R, C, false)
	// store x as (B, R, T, 2C) and view every other channel: strides (R*T*2C, 2C, T*2C, 2)
	big := make([]float64, B*R*T*2*C)
	for i := range big {
		big[i] = math.NaN()
	}
	for b := 0; b < B; b++ {
		for tt := 0; tt < T; tt++ {
			for r := 0; r < R; r++ {
				for c := 0; c < C; c++ {
					big[((b*R+r)*T+tt)*2*C+2*c] = x[((b*T+tt)*R+r)*C+c]
				}
			}
		}
	}
	ptr := func(s []float64) uintptr { return uintptr(unsafe.Pointer(&s[0])) }
	xs := Tensor{ptr(big), Float64, []int64{int64(B), int64(T), int64(R), int64(C)},
		[]int64{int64(R * T * 2 * C), int64(2 * C), int64(T * 2 * C), 2}}
	args := ScanArgs{
		A:      Tensor{ptr(A), Float64, []int64{int64(B), int64(T), int64(R)}, Contiguous(int64(B), int64(T), int64(R))},
		X:      xs,
		Out:    xs, // in place: out is x itself
		Device: CPU,
	}
	if err := Scan(&args); err != nil {
		t.Fatal(err)
	}
	got := make([]float64, len(x))
	for b := 0; b < B; b++ {
		for tt := 0; tt < T; tt++ {
			for r := 0; r < R; r++ {
				for c := 0; c < C; c++ {
					got[((b*T+tt)*R+r)*C+c] = big[((b*R+r)*T+tt)*2*C+2*c]
				}
			}
		}
	}
	if e := relErr(got, want); !(e <= 1e-12) {
		t.Fatalf("strided in-place scan: rel err %.3g", e)
	}
	for i := 1; i < len(big); i += 2 {
		if !math.IsNaN(big[i]) {
			t.Fatalf("wrote outside the view at %d", i)
		}
	}
}

func TestNoCUDABackendInCPUBuild(t *testing.T) {
	if HasCUDA() {
		t.Skip("CUDA backend linked")
	}
	A, x := []float32{-0.1}, []float32{1}
	args := ScanArgs{
		A:      Tensor{uintptr(unsafe.Pointer(&A[0])), Float32, []int64{1, 1, 1}, []int64{1, 1, 1}},
		X:      Tensor{uintptr(unsafe.Pointer(&x[0])), Float32, []int64{1, 1, 1, 1}, []int64{1, 1, 1, 1}},
		Out:    Tensor{uintptr(unsafe.Pointer(&x[0])), Float32, []int64{1, 1, 1, 1}, []int64{1, 1, 1, 1}},
		Device: 0,
	}
	if err := Scan(&args); StatusOf(err) != StatusNoCUDA {
		t.Fatalf("device call without CUDA: got %v (status %v)", err, StatusOf(err))
	}
}

// parallelSegments visits every (b, r) row exactly once, in segments of one b with at most
// segmentElems states, whatever the number of goroutines.
func TestParallelSegmentsCoverEveryRowOnce(t *testing.T) {
	for _, c := range [][3]int64{{1, 1, 1}, {3, 37, 300}, {5, 7, 8192}, {2, 1000, 1}, {4, 16, 64}, {1, 3, 20000}} {
		B, R, C := c[0], c[1], c[2]
		var mu sync.Mutex
		seen := make([]int, B*R)
		parallelSegments(B, R, C, func(b, r0, r1 int64, h, aux []float64) {
			if r0 >= r1 || r1 > R || int64(len(h)) < (r1-r0)*C || int64(len(aux)) < r1-r0 ||
				r1-r0 > max(1, segmentElems/C) {
				t.Errorf("%v: segment b %d rows [%d, %d) with %d states", c, b, r0, r1, len(h))
			}
			mu.Lock()
			for r := r0; r < r1; r++ {
				seen[b*R+r]++
			}
			mu.Unlock()
		})
		for i, n := range seen {
			if n != 1 {
				t.Fatalf("%v: row %d visited %d times", c, i, n)
			}
		}
	}
}
