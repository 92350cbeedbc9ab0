package core

import (
	"math/rand/v2"
	"testing"
	"unsafe"
)

// TestPackedSequences: a pack of uneven sequences (empty ones included) equals scanning each
// sequence alone with its A rebased to the sequence start (A[s-1] := 0 there) and its own
// initial state; final states are per sequence, and an empty sequence's final state is its
// initial state. Also the value checks of cu_seqlens.
func TestPackedSequences(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	cu := []int64{0, 0, 3, 4, 4, 17, 40, 40}
	T, R, C := cu[len(cu)-1], int64(2), int64(3)
	N := int64(len(cu) - 1)
	A, x := randomInputs(rng, 1, int(T), int(R), int(C))
	h0 := make([]float64, N*R*C)
	for i := range h0 {
		h0[i] = rng.NormFloat64()
	}
	ptr := func(p unsafe.Pointer) uintptr { return uintptr(p) }
	for _, reverse := range []bool{false, true} {
		out, fin := make([]float64, len(x)), make([]float64, len(h0))
		args := ScanArgs{
			A:          Tensor{ptr(unsafe.Pointer(&A[0])), Float64, []int64{1, T, R}, Contiguous(1, T, R)},
			X:          Tensor{ptr(unsafe.Pointer(&x[0])), Float64, []int64{1, T, R, C}, Contiguous(1, T, R, C)},
			Out:        Tensor{ptr(unsafe.Pointer(&out[0])), Float64, []int64{1, T, R, C}, Contiguous(1, T, R, C)},
			FinalState: Tensor{ptr(unsafe.Pointer(&fin[0])), Float64, []int64{N, R, C}, Contiguous(N, R, C)},
			CuSeqlens:  Tensor{ptr(unsafe.Pointer(&cu[0])), Int64, []int64{N + 1}, []int64{1}},
			Reverse:    reverse,
			Device:     CPU,
		}
		if !reverse {
			args.InitialState = Tensor{ptr(unsafe.Pointer(&h0[0])), Float64, []int64{N, R, C}, Contiguous(N, R, C)}
		}
		if err := Scan(&args); err != nil {
			t.Fatal(err)
		}
		for k := int64(0); k < N; k++ {
			s, e := cu[k], cu[k+1]
			var init []float64
			if !reverse {
				init = h0[k*R*C : (k+1)*R*C]
			}
			if s == e {
				for i := int64(0); i < R*C; i++ {
					want := 0.0
					if init != nil {
						want = init[i]
					}
					if fin[k*R*C+i] != want {
						t.Fatalf("reverse=%v empty sequence %d: final state %g, want %g", reverse, k, fin[k*R*C+i], want)
					}
				}
				continue
			}
			a := make([]float64, (e-s)*R)
			for tt := s; tt < e; tt++ {
				for r := int64(0); r < R; r++ {
					prev := 0.0
					if s > 0 {
						prev = A[(s-1)*R+r]
					}
					a[(tt-s)*R+r] = A[tt*R+r] - prev
				}
			}
			want, wantFin, err := ScanSlices(a, x[s*R*C:e*R*C], 1, e-s, R, C, Options{InitialState: init, Reverse: reverse})
			if err != nil {
				t.Fatal(err)
			}
			if d := relErr(out[s*R*C:e*R*C], want); !(d <= 1e-12) {
				t.Errorf("reverse=%v sequence %d [%d,%d): rel err %.3g", reverse, k, s, e, d)
			}
			if d := relErr(fin[k*R*C:(k+1)*R*C], wantFin); !(d <= 1e-12) {
				t.Errorf("reverse=%v sequence %d: final state rel err %.3g", reverse, k, d)
			}
		}
	}
	// value checks
	for _, bad := range []struct {
		cu  []int64
		msg string
	}{
		{[]int64{1, 40}, "must start at 0 and end at T = 40, got 1 and 40"},
		{[]int64{0, 39}, "must start at 0 and end at T = 40, got 0 and 39"},
		{[]int64{0, 20, 10, 40}, "must be non-decreasing, got 10 after 20 at index 2"},
	} {
		out := make([]float64, len(x))
		args := ScanArgs{
			A:         Tensor{ptr(unsafe.Pointer(&A[0])), Float64, []int64{1, T, R}, Contiguous(1, T, R)},
			X:         Tensor{ptr(unsafe.Pointer(&x[0])), Float64, []int64{1, T, R, C}, Contiguous(1, T, R, C)},
			Out:       Tensor{ptr(unsafe.Pointer(&out[0])), Float64, []int64{1, T, R, C}, Contiguous(1, T, R, C)},
			CuSeqlens: Tensor{ptr(unsafe.Pointer(&bad.cu[0])), Int64, []int64{int64(len(bad.cu))}, []int64{1}},
			Device:    CPU,
		}
		if err := Scan(&args); StatusOf(err) != StatusInvalidArgument || err.Error() != "cu_seqlens: "+bad.msg {
			t.Errorf("cu_seqlens %v: got %v", bad.cu, err)
		}
	}
}

// TestMaxSeqlenHint: a problem's MaxLen is the caller's max_seqlen for device offsets (clamped to
// T; 0 when not given) and the longest sequence of host offsets whatever the caller says; a
// negative max_seqlen, or one without cu_seqlens, is refused by name.
func TestMaxSeqlenHint(t *testing.T) {
	cu := []int64{0, 3, 3, 10, 12}
	far := func(i uintptr, shape ...int64) Tensor { return Tensor{i << 40, Float32, shape, Contiguous(shape...)} }
	seq := Tensor{uintptr(unsafe.Pointer(&cu[0])), Int64, []int64{5}, []int64{1}}
	call := func(device int, hint int64, packed bool) (Problem, error) {
		a := &ScanArgs{A: far(1, 1, 12, 2), X: far(2, 1, 12, 2, 8), Out: far(3, 1, 12, 2, 8), Device: device, MaxSeqlen: hint}
		if packed {
			a.CuSeqlens = seq
		}
		return Validate(a)
	}
	for _, c := range []struct {
		device     int
		hint, want int64
	}{{0, 0, 0}, {0, 5, 5}, {0, 99, 12}, {CPU, 0, 7}, {CPU, 2, 7}} {
		p, err := call(c.device, c.hint, true)
		if err != nil || p.MaxLen != c.want {
			t.Errorf("device %d, max_seqlen %d: MaxLen %d (%v), want %d", c.device, c.hint, p.MaxLen, err, c.want)
		}
	}
	for _, c := range []struct {
		hint   int64
		packed bool
		msg    string
	}{{-1, true, "max_seqlen: expected >= 0 (0: unknown), got -1"}, {4, false, "max_seqlen: given (4) without cu_seqlens"}} {
		if _, err := call(0, c.hint, c.packed); err == nil || err.Error() != c.msg {
			t.Errorf("max_seqlen %d (packed %v): %v, want %q", c.hint, c.packed, err, c.msg)
		}
	}
}
