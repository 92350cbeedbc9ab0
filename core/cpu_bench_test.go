package core

import (
	"math/rand"
	"testing"
	"unsafe"
)

// Benchmarks of the CPU backend on (4,2048,16,64) float32, forward and backward (programs, not
// tests: make bench-go). Bytes: x and out (forward); g, x, out and dx (backward).

const benchB, benchT, benchR, benchC = 4, 2048, 16, 64

func benchInputs() (A, x []float32) {
	rng := rand.New(rand.NewSource(1))
	A, x = make([]float32, benchB*benchT*benchR), make([]float32, benchB*benchT*benchR*benchC)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	for b := 0; b < benchB; b++ {
		for r := 0; r < benchR; r++ {
			acc := float32(0)
			for t := 0; t < benchT; t++ {
				acc -= 0.1 * rng.Float32()
				A[(b*benchT+t)*benchR+r] = acc
			}
		}
	}
	return A, x
}

func BenchmarkCPUScan(b *testing.B) {
	A, x := benchInputs()
	b.SetBytes(int64(len(x)) * 8)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := ScanSlices(A, x, benchB, benchT, benchR, benchC, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCPUBackward(b *testing.B) {
	A, x := benchInputs()
	out, _, err := ScanSlices(A, x, benchB, benchT, benchR, benchC, Options{})
	if err != nil {
		b.Fatal(err)
	}
	g, dx, dA := append([]float32(nil), x...), make([]float32, len(x)), make([]float32, len(A))
	p := func(s []float32) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(s))) }
	t4 := func(s []float32) Tensor {
		return Tensor{p(s), Float32, []int64{benchB, benchT, benchR, benchC}, Contiguous(benchB, benchT, benchR, benchC)}
	}
	t3 := func(s []float32) Tensor {
		return Tensor{p(s), Float32, []int64{benchB, benchT, benchR}, Contiguous(benchB, benchT, benchR)}
	}
	args := &BackwardArgs{A: t3(A), X: t4(x), Out: t4(out), GradOut: t4(g), GradX: t4(dx), GradA: t3(dA), Device: CPU}
	b.SetBytes(int64(len(x)) * 16)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := ScanBackward(args); err != nil {
			b.Fatal(err)
		}
	}
}
