package core_test

import (
	"fmt"

	"github.com/nanossm/nanossm/core"
)

// ScanSlices runs the scan on the CPU over contiguous Go slices.
func ExampleScanSlices() {
	// B = 1, T = 3, R = 1, C = 2; A is the cumulative log-decay, log(0.5) per step.
	A := []float64{-0.6931471805599453, -1.3862943611198906, -2.0794415416798357}
	x := []float64{1, 10, 1, 10, 1, 10}
	out, final, err := core.ScanSlices(A, x, 1, 3, 1, 2, core.Options{})
	if err != nil {
		panic(err)
	}
	fmt.Printf("out %.3g\nfinal %.3g\n", out, final)
	// Output:
	// out [1 10 1.5 15 1.75 17.5]
	// final [1.75 17.5]
}
