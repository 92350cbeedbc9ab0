package core

import (
	"runtime"
	"unsafe"
)

// Options are the optional parts of a scan call made from Go.
type Options struct {
	InitialState []float64 // (B,R,C), converted to the state dtype; nil for none
	Reverse      bool
}

// ScanSlices runs the scan on the CPU over contiguous Go slices: A is (B,T,R), x is (B,T,R,C).
// It returns out (B,T,R,C) and the final state (B,R,C).
func ScanSlices[F float](A, x []F, B, T, R, C int64, opt Options) (out, final []F, err error) {
	if int64(len(A)) != B*T*R || B*T*R < 1 {
		return nil, nil, Invalid("A", "expected %d elements for (B,T,R) = (%d,%d,%d), got %d", B*T*R, B, T, R, len(A))
	}
	if int64(len(x)) != B*T*R*C || C < 1 {
		return nil, nil, Invalid("x", "expected %d elements for (B,T,R,C) = (%d,%d,%d,%d), got %d", B*T*R*C, B, T, R, C, len(x))
	}
	dt := Float32
	if unsafe.Sizeof(F(0)) == 8 {
		dt = Float64
	}
	addr := func(s []F) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(s))) }
	out, final = make([]F, len(x)), make([]F, B*R*C)
	args := ScanArgs{
		A:          Tensor{addr(A), dt, []int64{B, T, R}, Contiguous(B, T, R)},
		X:          Tensor{addr(x), dt, []int64{B, T, R, C}, Contiguous(B, T, R, C)},
		Out:        Tensor{addr(out), dt, []int64{B, T, R, C}, Contiguous(B, T, R, C)},
		FinalState: Tensor{addr(final), dt, []int64{B, R, C}, Contiguous(B, R, C)},
		Reverse:    opt.Reverse,
		Device:     CPU,
	}
	var h0 []F
	if opt.InitialState != nil {
		if int64(len(opt.InitialState)) != B*R*C {
			return nil, nil, Invalid("initial_state", "expected %d elements for (B,R,C), got %d", B*R*C, len(opt.InitialState))
		}
		h0 = make([]F, len(opt.InitialState))
		for i, v := range opt.InitialState {
			h0[i] = F(v)
		}
		args.InitialState = Tensor{addr(h0), dt, []int64{B, R, C}, Contiguous(B, R, C)}
	}
	err = Scan(&args)
	runtime.KeepAlive(A)
	runtime.KeepAlive(x)
	runtime.KeepAlive(h0)
	if err != nil {
		return nil, nil, err
	}
	return out, final, nil
}
